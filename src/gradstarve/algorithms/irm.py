"""Invariant Risk Minimization, IRMv1 (Arjovsky et al. 2019)."""

from __future__ import annotations

import torch

from gradstarve.algorithms.base import Algorithm, Batch, Objective
from gradstarve.penalties import group_means, irm_penalty_per_group, per_example_cross_entropy


class IRM(Algorithm):
    """IRMv1: ``mean_e R_e + w · mean_e (d/ds R_e(s · ŷ) at s = 1)²`` over the environments present in the batch.

    ``R_e`` is environment ``e``'s mean cross-entropy. The paper writes sums over environments; the reference
    Colored MNIST code (and this class) averages both terms over environments, which leaves ``w`` unchanged.
    One forward pass covers all environments; the logits are split by ``group`` with a scatter, and the penalty
    uses the closed-form derivative (:func:`gradstarve.penalties.irm_penalty`), so no double-backward graph is
    built. With ``w = 0`` the penalty is not computed.

    Schedule (reference code): ``w = irm_lambda_before`` (1) while ``step < irm_anneal_steps``, then ``irm_lambda``.
    With ``rescale_loss`` the total (including the ``l2_weight`` term) is divided by ``w`` whenever ``w > 1``
    ("rescale the entire loss to keep gradients in a reasonable range"). With ``reset_optimizer_at_anneal`` the
    optimizer is rebuilt at step ``irm_anneal_steps``, as DomainBed does; the IRM reference code and the Gradient
    Starvation released code do **not** reset it (set the flag to False to reproduce them exactly).

    Hyperparameters: ``irm_lambda``, ``irm_lambda_before``, ``irm_anneal_steps``, ``rescale_loss``,
    ``reset_optimizer_at_anneal``.
    """

    registry_name = "irm"

    needs_groups = True
    anneal_prefix = "irm"

    def objective(self, batch: Batch) -> Objective:
        assert batch.group is not None  # needs_groups: the trainer refuses a task without groups
        logits = self.model(batch.x)
        losses = per_example_cross_entropy(logits, batch.y)
        env_risks, counts = group_means(losses, batch.group, self.n_groups)
        present = counts > 0
        nll = env_risks[present].mean()
        weight = self.penalty_weight()
        if weight == 0.0:
            penalty = torch.zeros((), dtype=nll.dtype, device=nll.device)
            loss = nll
        else:
            penalties, _ = irm_penalty_per_group(logits, batch.y, batch.group, self.n_groups)
            penalty = penalties[present].mean()
            loss = nll + weight * penalty
        return Objective(loss, nll, penalty, weight, scale=self.loss_scale(weight))

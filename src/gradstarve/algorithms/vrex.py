"""Risk Extrapolation, V-REx (Krueger et al. 2021)."""

from __future__ import annotations

from gradstarve.algorithms.base import Algorithm, Batch, Objective
from gradstarve.penalties import group_means, per_example_cross_entropy, rex_penalty


class VREx(Algorithm):
    """V-REx: ``mean_e R_e + w · Var_e(R_e)`` over the environments present in the batch (population variance).

    The V-REx paper writes ``Σ_e R_e + β Var(R)``, i.e. ``m (mean_e R_e + (β/m) Var)`` for ``m`` environments:
    ``w = β / m``. Its released Colored MNIST code (two environments) minimises ``R_1 + R_2 + c (R_1 - R_2)²
    + l2 ‖θ‖²`` = ``2 (mean + 2c Var + l2/2 ‖θ‖²)``: ``w = 2c``, ``l2_weight = l2 / 2`` and, before annealing,
    ``vrex_lambda_before = 2`` (see :mod:`gradstarve.hparams`). One forward pass covers all environments.

    The schedule, ``rescale_loss`` and ``reset_optimizer_at_anneal`` work as for :class:`~gradstarve.algorithms.irm.IRM`
    (the V-REx reference code rescales and does not reset; DomainBed resets and does not rescale).

    Hyperparameters: ``vrex_lambda``, ``vrex_lambda_before``, ``vrex_anneal_steps``, ``rescale_loss``,
    ``reset_optimizer_at_anneal``.
    """

    registry_name = "vrex"

    needs_groups = True
    anneal_prefix = "vrex"

    def objective(self, batch: Batch) -> Objective:
        assert batch.group is not None  # needs_groups: the trainer refuses a task without groups
        losses = per_example_cross_entropy(self.model(batch.x), batch.y)
        env_risks, counts = group_means(losses, batch.group, self.n_groups)
        present_risks = env_risks[counts > 0]
        nll = present_risks.mean()
        penalty = rex_penalty(present_risks)
        weight = self.penalty_weight()
        return Objective(nll + weight * penalty, nll, penalty, weight, scale=self.loss_scale(weight))

"""Group distributionally robust optimisation, online algorithm of Sagawa et al. (2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradstarve.algorithms.base import Algorithm, Batch, Objective, _positive
from gradstarve.penalties import group_means, per_example_cross_entropy


class GroupDRO(Algorithm):
    """Group DRO: minimise ``Σ_g q_g R_g`` while ``q`` ascends the group risks (Sagawa et al. 2020, Algorithm 1).

    Each update first moves the adversarial weights, ``q_g <- q_g exp(η_q R_g)`` then ``q <- q / Σ q`` (with the
    batch's detached group risks ``R_g``; a group absent from the batch has ``R_g = 0``, as in the reference code),
    then takes a step on ``Σ_g q_g R_g``. ``q`` starts uniform and is the buffer ``group_weights``. With one
    group this is ERM. The reference code's optional "generalization adjustment" ``C / sqrt(n_g)`` is not
    implemented (its default, C = 0, is what this class does).

    Hyperparameters: ``groupdro_eta`` (η_q, the step size of ``q``; CelebA: 0.01). Sagawa et al. pair it with
    strong L2 (``weight_decay`` 0.1 on CelebA) and early stopping.
    """

    registry_name = "group_dro"

    needs_groups = True
    hparam_names = ("groupdro_eta",)

    def __init__(self, model: nn.Module, hparams: Mapping[str, Any], n_groups: int) -> None:
        super().__init__(model, hparams, n_groups)
        self.eta = _positive(self.hparams, "groupdro_eta", allow_zero=True)
        dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
        self.register_buffer("group_weights", torch.full((n_groups,), 1.0 / n_groups, dtype=dtype))

    def objective(self, batch: Batch) -> Objective:
        losses = per_example_cross_entropy(self.model(batch.x), batch.y)
        group_risks, counts = group_means(losses, batch.group, self.n_groups)
        with torch.no_grad():
            weights = self.group_weights * torch.exp(self.eta * group_risks.detach().to(self.group_weights.dtype))
            self.group_weights.copy_(weights / weights.sum())
        loss = (self.group_weights.to(group_risks.dtype) * group_risks).sum()
        worst = float(group_risks.detach()[counts > 0].max())
        return Objective(loss, losses.mean(), logs={"worst_group_nll": worst})

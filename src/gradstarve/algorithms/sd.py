"""Spectral Decoupling (Section 3.5): cross-entropy plus an L2 penalty on the logits, Eq. 25 / Eq. 28."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from gradstarve.algorithms.base import Algorithm, Batch, Objective
from gradstarve.losses import SD_SCHEDULES, sd_schedule
from gradstarve.penalties import check_lam, class_conditional_sd, per_example_cross_entropy, spectral_decoupling


class SpectralDecoupling(Algorithm):
    """Spectral Decoupling: ``w_nll · mean_i CE_i + w_pen · mean_i λ/2 ‖ŷ_i - γ‖²``.

    Both terms are averaged over the batch, which has the minimiser of the paper's Eq. 25 (both terms summed) with
    the same λ, so :func:`gradstarve.theory.fixed_point` (``"spectral_decoupling"``) predicts the responses
    ``r_i = α*_i / λ`` of a linear model trained with it. The released code's ``sd_coef`` is ``λ/2``.

    Hyperparameters:
        sd_lam: λ >= 0, or a list of one λ_c per class for class-conditional SD (CelebA, App. A.3), normalised per
            class as the released code does (:func:`gradstarve.penalties.class_conditional_sd`, ``"class_mean"``).
        sd_gamma: γ (Eq. 28), a float or one value per class; the raw target logit (class-0 logits are pulled
            toward ``+γ_0``).
        sd_schedule: ``"constant"`` (plain Eq. 25), ``"step"`` (cross-entropy only for ``sd_anneal_steps`` steps,
            then Eq. 25), ``"linear"`` (penalty ramped in over ``sd_anneal_steps``) or ``"paper_released"`` (the
            released Colored MNIST code; see :func:`gradstarve.losses.sd_schedule`).
        sd_anneal_steps: ``T >= 0`` of the schedule.
    """

    registry_name = "sd"

    hparam_names = ("sd_lam", "sd_gamma", "sd_schedule", "sd_anneal_steps")

    def __init__(self, model: nn.Module, hparams: Mapping[str, Any], n_groups: int) -> None:
        super().__init__(model, hparams, n_groups)
        lam, gamma = self.hparams["sd_lam"], self.hparams["sd_gamma"]
        self.per_class = _is_list(lam) or _is_list(gamma)
        if self.per_class:
            lam_values = [check_lam(v, "sd_lam") for v in (lam if _is_list(lam) else [lam])]
            gamma_values = [_finite(v, "sd_gamma") for v in (gamma if _is_list(gamma) else [gamma])]
            classes = max(len(lam_values), len(gamma_values))
            if {len(lam_values), len(gamma_values)} - {1, classes}:
                raise ValueError(f"sd_lam and sd_gamma must give one value per class, got {lam!r} and {gamma!r}")
            self.lam: float | list[float] = lam_values * (classes // len(lam_values))
            self.gamma: float | list[float] = gamma_values * (classes // len(gamma_values))
        else:
            self.lam, self.gamma = check_lam(lam, "sd_lam"), _finite(gamma, "sd_gamma")
        schedule = self.hparams["sd_schedule"]
        if schedule not in SD_SCHEDULES:
            raise ValueError(f"hyperparameter sd_schedule must be one of {SD_SCHEDULES}, got {schedule!r}")
        if schedule == "paper_released" and self.per_class:
            raise ValueError("sd_schedule 'paper_released' scales the loss by λ/2 and needs a single (scalar) sd_lam")
        sd_schedule(0, schedule, self.hparams["sd_anneal_steps"])  # validates sd_anneal_steps

    def penalty_switch_step(self) -> int | None:
        if self.hparams["sd_schedule"] == "constant":
            return None
        return int(self.hparams["sd_anneal_steps"]) or None

    def objective(self, batch: Batch) -> Objective:
        logits = self.model(batch.x)
        nll = per_example_cross_entropy(logits, batch.y).mean()
        weights = sd_schedule(
            self.num_updates,
            self.hparams["sd_schedule"],
            int(self.hparams["sd_anneal_steps"]),
            0.0 if self.per_class else self.lam,
        )
        if self.per_class:
            penalty = class_conditional_sd(logits, batch.y, self.lam, self.gamma, reduction="class_mean")
        else:
            penalty = spectral_decoupling(logits, self.lam, self.gamma)
        loss = weights.nll * nll + weights.penalty * penalty
        return Objective(loss, nll, penalty, weights.penalty, logs={"nll_weight": weights.nll})


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _finite(value: Any, name: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"hyperparameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"hyperparameter {name} must be finite, got {value!r}")
    return result

"""Drop-in losses: :class:`SpectralDecouplingLoss` (a one-line change from ``nn.BCEWithLogitsLoss`` /
``nn.CrossEntropyLoss``), the penalty schedules of Spectral Decoupling, and LfF's generalized cross-entropy.

Usage::

    criterion = SpectralDecouplingLoss(lam=0.006)          # was: nn.BCEWithLogitsLoss()
    loss = criterion(model(x), y)                           # y: (n,) int64 or float targets shaped like the input

The penalty normalisation follows :mod:`gradstarve.penalties`: with ``reduction="mean"`` both the cross-entropy
and ``λ/2 ‖ŷ_i - γ‖²`` are averaged over examples, which has the minimiser of the paper's Eq. 25 (a sum) with the
same λ. The paper's released code writes ``sd_coef · mean(ŷ²)``; ``lam = 2 · sd_coef``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional

from gradstarve.penalties import (
    REDUCTIONS,
    check_labels,
    check_lam,
    check_logits,
    class_conditional_sd,
    is_binary,
    spectral_decoupling,
)

SDSchedule = Literal["constant", "step", "linear", "paper_released"]
SD_SCHEDULES: tuple[str, ...] = ("constant", "step", "linear", "paper_released")


# --------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------
class LossWeights(NamedTuple):
    """Multipliers of the two terms of a penalised loss at one step: ``nll · CE + penalty · (λ/2 ‖ŷ - γ‖²)``."""

    nll: float
    penalty: float


def sd_schedule(step: int, schedule: SDSchedule = "constant", anneal_steps: int = 0, lam: float = 0.0) -> LossWeights:
    """Weights of the cross-entropy and of the Spectral Decoupling term at optimisation step ``step`` (0-based).

    Schedules (``s = step``, ``T = anneal_steps``):

    * ``"constant"``: plain Eq. 25 from the first step, ``(1, 1)``.
    * ``"step"``: warm-up with plain cross-entropy, then Eq. 25: ``(1, 0)`` for ``s < T``, ``(1, 1)`` after. This is
      how the paper's Table 3 describes its "anneal steps" ("iterations done before applying the method").
    * ``"linear"``: ramp the penalty in, ``(1, min(1, s / T))``.
    * ``"paper_released"``: the schedule of the paper's released Colored MNIST code. With ``sd_coef = λ/2`` it
      trains ``nll + sd_coef · mean(ŷ²)`` for ``s < T`` and ``sd_coef · (mean(ŷ²) + nll)`` from ``s = T`` on, i.e.
      weights ``(1, 1)`` then ``(λ/2, 1)``. Before ``T`` this is ERM in all but name (sd_coef = 2e-5). From ``T`` on
      the loss points in the direction of ``nll + mean(ŷ²)``, i.e. Eq. 25 with λ = 2, a *strong* penalty, scaled by
      the tiny ``sd_coef``; Adam largely undoes that scale (it is invariant to a constant factor on the loss except
      through ``eps`` and through its second-moment estimate, which remembers the unscaled phase for ~1/(1 - β2) =
      1000 steps), so training goes on, at first with smaller steps. Measured with this package on Colored MNIST
      (released hyperparameters, one seed, float32, CPU): test accuracy 13.7% at step 500, 47.9% at 1000, 66.7% at
      1500 and 70.5% at 2000, train 69.7% (paper, Table 1: train 70.0%, test 68.4%).

    Args:
        step: the optimisation step, ``>= 0``.
        schedule: one of :data:`SD_SCHEDULES`.
        anneal_steps: ``T >= 0`` (ignored by ``"constant"``).
        lam: λ (only ``"paper_released"`` uses it).
    """
    if schedule not in SD_SCHEDULES:
        raise ValueError(f"schedule must be one of {SD_SCHEDULES}, got {schedule!r}")
    if int(step) != step or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if int(anneal_steps) != anneal_steps or anneal_steps < 0:
        raise ValueError(f"anneal_steps must be an integer >= 0, got {anneal_steps!r}")
    lam = check_lam(lam)
    if schedule == "constant":
        return LossWeights(1.0, 1.0)
    if schedule == "step":
        return LossWeights(1.0, 0.0 if step < anneal_steps else 1.0)
    if schedule == "linear":
        return LossWeights(1.0, 1.0 if anneal_steps == 0 else min(1.0, step / anneal_steps))
    return LossWeights(1.0 if step < anneal_steps else lam / 2, 1.0)


# --------------------------------------------------------------------------------------------------------------
# Generalized cross-entropy (LfF's biased model)
# --------------------------------------------------------------------------------------------------------------
def generalized_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, q: float = 0.7, reduction: str = "mean"
) -> torch.Tensor:
    """Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018), LfF's loss for its biased model.

    ``p_y`` is ``σ(Y ŷ)`` for binary logits and ``softmax(ŷ)_y`` otherwise. Its gradient is ``p_y^q`` times the
    cross-entropy's, so it emphasises examples the model already fits ("easy", bias-aligned ones). LfF's released
    code uses the surrogate ``q · p_y^q · CE`` with ``p_y^q`` detached, whose gradient is ``q`` times this one; each
    LfF network has its own Adam optimizer, which is invariant to that constant (up to ``eps``).

    Args:
        logits: ``(n,)``, ``(n, 1)`` or ``(n, C)``.
        y: ``(n,)`` int64 labels.
        q: ``0 < q <= 1`` (q -> 0 recovers the cross-entropy).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_labels(logits, y)
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"q must lie in (0, 1], got {q!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if is_binary(logits):
        signed = (2 * y - 1).to(logits.dtype) * logits.reshape(-1)
        log_p = functional.logsigmoid(signed)
    else:
        log_p = torch.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    values = -torch.expm1(q * log_p) / q
    return values.mean() if reduction == "mean" else values.sum() if reduction == "sum" else values


# --------------------------------------------------------------------------------------------------------------
# The drop-in module
# --------------------------------------------------------------------------------------------------------------
class SpectralDecouplingLoss(nn.Module):
    """Cross-entropy plus Spectral Decoupling, a drop-in for ``nn.BCEWithLogitsLoss`` / ``nn.CrossEntropyLoss``.

    ``loss_i = w_nll · CE_i + w_pen · λ/2 ‖ŷ_i - γ‖²`` (Eq. 25; Eq. 28 with γ), reduced like torch's losses.
    ``(w_nll, w_pen)`` come from :func:`sd_schedule` (``(1, 1)`` for the default ``"constant"`` schedule).

    Input conventions:

    * **Binary** (``task="binary"``, or ``"auto"`` with input ``(n,)`` / ``(n, 1)``): like ``BCEWithLogitsLoss``,
      the target has the input's shape and holds values in [0, 1] (float or integer; hard 0/1 labels for per-class
      λ/γ); an ``(n,)`` target is also accepted for an ``(n, 1)`` input. ``reduction="none"`` returns the input's
      shape.
    * **Multi-class** (``task="multiclass"``, or ``"auto"`` with ``(n, C)``, ``C >= 2``): like
      ``CrossEntropyLoss``, the target is ``(n,)`` int64 class indices; ``reduction="none"`` returns ``(n,)``; the
      penalty covers all ``C`` logits.

    Args:
        lam: λ >= 0, a float, or one value per class for class-conditional SD (CelebA, App. A.3).
        gamma: γ, a float or one value per class (the raw target logit; see
            :func:`gradstarve.penalties.class_conditional_sd`).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``, applied to both terms.
        task: ``"auto"``, ``"binary"`` or ``"multiclass"``.
        schedule: the penalty schedule (:func:`sd_schedule`).
        anneal_steps: its ``T`` (:func:`sd_schedule`).
        class_mean: with per-class λ, normalise the penalty per class as the released CelebA code does
            (``Σ_c λ_c/2 · mean over class c``) instead of per example; needs ``reduction="mean"``.

    Not supported: torch's ``weight``, ``pos_weight``, ``ignore_index`` and ``label_smoothing``.

    The schedule's step is the ``step`` argument of :meth:`forward` when given; otherwise an internal counter
    (the buffer ``num_steps``, saved in ``state_dict``) that advances by one after every call in training mode.
    """

    def __init__(
        self,
        lam: float | Sequence[float] = 0.0,
        gamma: float | Sequence[float] = 0.0,
        reduction: str = "mean",
        task: Literal["auto", "binary", "multiclass"] = "auto",
        schedule: SDSchedule = "constant",
        anneal_steps: int = 0,
        class_mean: bool = False,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if task not in ("auto", "binary", "multiclass"):
            raise ValueError(f"task must be 'auto', 'binary' or 'multiclass', got {task!r}")
        self.per_class = not isinstance(lam, int | float) or not isinstance(gamma, int | float)
        if self.per_class:
            lam_values = [check_lam(v) for v in _as_list(lam, "lam")]
            gamma_values = [float(v) for v in _as_list(gamma, "gamma")]
            if len(lam_values) == 1:
                lam_values = lam_values * len(gamma_values)
            if len(gamma_values) == 1:
                gamma_values = gamma_values * len(lam_values)
            if len(lam_values) != len(gamma_values):
                raise ValueError(
                    f"per-class lam and gamma must have the same length, got {len(lam_values)} and {len(gamma_values)}"
                )
            if not all(math.isfinite(v) for v in gamma_values):
                raise ValueError(f"gamma must be finite, got {gamma_values}")
            self.lam: float | tuple[float, ...] = tuple(lam_values)
            self.gamma: float | tuple[float, ...] = tuple(gamma_values)
        else:
            self.lam = check_lam(lam)
            self.gamma = float(gamma)
            if not math.isfinite(self.gamma):
                raise ValueError(f"gamma must be finite, got {gamma!r}")
        if class_mean and not self.per_class:
            raise ValueError("class_mean=True needs per-class lam/gamma (one value per class)")
        if class_mean and reduction != "mean":
            raise ValueError(f"class_mean=True normalises the mean loss; it needs reduction='mean', not {reduction!r}")
        sd_schedule(0, schedule, anneal_steps)  # validates schedule and anneal_steps
        if schedule == "paper_released" and self.per_class:
            raise ValueError("schedule='paper_released' scales the loss by one λ/2; it needs a single (scalar) lam")
        self.reduction = reduction
        self.task = task
        self.schedule = schedule
        self.anneal_steps = int(anneal_steps)
        self.class_mean = bool(class_mean)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"lam={self.lam}, gamma={self.gamma}, reduction={self.reduction!r}, task={self.task!r}, "
            f"schedule={self.schedule!r}, anneal_steps={self.anneal_steps}"
        )

    def _binary(self, input: torch.Tensor) -> bool:
        if self.task == "auto":
            return input.ndim <= 1 or (input.ndim == 2 and input.shape[1] == 1)
        return self.task == "binary"

    def forward(self, input: torch.Tensor, target: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """The loss of logits ``input`` against ``target`` (see the class docstring for shapes)."""
        check_logits(input, "input")
        if not isinstance(target, torch.Tensor):
            raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
        lam_scalar = 0.0 if self.per_class else self.lam
        current = int(self.num_steps) if step is None else step
        weights = sd_schedule(current, self.schedule, self.anneal_steps, lam_scalar)
        if self._binary(input):
            if input.ndim == 2 and input.shape[1] != 1:
                raise ValueError(f"task='binary' needs input of shape (n,) or (n, 1), got {tuple(input.shape)}")
            targets = self._binary_targets(input, target)
            labels = targets.reshape(-1).to(torch.int64) if self.per_class else None
            nll = functional.binary_cross_entropy_with_logits(input, targets, reduction="none")
        else:
            if input.ndim != 2 or input.shape[1] < 2:
                raise ValueError(f"task='multiclass' needs input of shape (n, C) with C >= 2, got {tuple(input.shape)}")
            check_labels(input, target, "target")
            labels = target
            nll = functional.cross_entropy(input, target, reduction="none")
        penalty = self._penalty(input, labels)
        if self.training and step is None:
            self.num_steps += 1
        if self.class_mean:
            return weights.nll * nll.mean() + weights.penalty * penalty
        loss = weights.nll * nll + weights.penalty * penalty.reshape(nll.shape)
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss

    def _binary_targets(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE targets with the input's shape and dtype, from a target of the input's shape or an ``(n,)`` one.

        Values must lie in [0, 1] (soft targets are allowed, as in ``BCEWithLogitsLoss``); class-conditional SD needs
        hard 0/1 labels.
        """
        n = input.shape[0]
        if target.shape != input.shape and target.shape != (n,):
            raise ValueError(
                f"shape mismatch: target must have the input's shape {tuple(input.shape)} or ({n},), "
                f"got {tuple(target.shape)}"
            )
        flat = target.reshape(-1)
        valid = (flat == 0) | (flat == 1) if self.per_class else (flat >= 0) & (flat <= 1)
        if n and not torch.all(valid):
            expected = "0 or 1 (per-class SD needs hard labels)" if self.per_class else "in [0, 1]"
            bad = flat[~valid][:5].tolist()
            raise ValueError(f"binary targets must be {expected} (labels out of range), got values such as {bad}")
        return flat.to(input.dtype).reshape(input.shape)

    def _penalty(self, input: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-example penalty ``(n,)`` (or the class-mean scalar)."""
        logits = input.reshape(-1) if self._binary(input) else input
        if not self.per_class:
            return spectral_decoupling(logits, self.lam, self.gamma, reduction="none")
        return class_conditional_sd(
            logits, labels, self.lam, self.gamma, reduction="class_mean" if self.class_mean else "none"
        )


def _as_list(values: float | Sequence[float], name: str) -> list[float]:
    if isinstance(values, int | float):
        return [float(values)]
    try:
        result = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a sequence of numbers (one per class), got {values!r}") from None
    if not result:
        raise ValueError(f"{name} must not be empty")
    return result

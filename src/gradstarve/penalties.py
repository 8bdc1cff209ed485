"""Penalties added to the cross-entropy: Spectral Decoupling (Eqs. 25, 28), IRMv1 and V-REx. Pure torch functions.

Conventions (every function here follows them)
------------------------------------------------
* **Logits.** Binary tasks: one logit per example, shape ``(n,)`` or ``(n, 1)`` (both accepted everywhere).
  Multi-class tasks: ``(n, C)`` with ``C >= 2``. A ``(n, 2)`` output is a two-class *multi-class* model (softmax).
* **Labels.** ``y`` is an int64 tensor of class indices, shape ``(n,)``, in ``{0, ..., C-1}`` (binary: ``{0, 1}``).
  The paper's ``±1`` labels are ``Y = 2 y - 1``; the response of Eq. 6 is ``r_i = Y_i ŷ_i``.
* **Normalisation of λ.** The paper writes every loss as a **sum** over examples (Eqs. 9, 25, 28). Here penalties
  are **averaged** over examples (``reduction="mean"``, the default), to sit beside the *mean* cross-entropy of
  ``torch.nn.BCEWithLogitsLoss``. Multiplying a mean loss by ``n`` gives the paper's sum with the **same** λ, so

      mean BCE + spectral_decoupling(ŷ, λ)  =  (1/n) · [Eq. 25 with λ]

  has the same minimiser as Eq. 25 and :func:`gradstarve.theory.fixed_point` applies with the same ``lam``.
  (Contrast weight decay: a mean loss plus ``λ'/2 ‖θ‖²`` is Eq. 9 with theory ``lam = n λ'``.)
* **λ/2, not λ.** Spectral Decoupling is ``λ/2 · ŷ²`` as in Eq. 25. The paper's released code (and DomainBed's
  ``SD``) writes ``sd_coef · mean(ŷ²)`` without the 1/2: **our λ = 2 · sd_coef**.

Cost: every function is ``O(n C)`` and differentiable; none needs a second backward pass (the IRMv1 penalty uses
the closed-form derivative with respect to the dummy scale, see :func:`irm_penalty`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
ClassReduction = Literal["class_mean", "mean", "sum", "none"]
CLASS_REDUCTIONS: tuple[str, ...] = ("class_mean", "mean", "sum", "none")


# --------------------------------------------------------------------------------------------------------------
# Logit and label conventions shared by penalties, losses and algorithms
# --------------------------------------------------------------------------------------------------------------
def is_binary(logits: torch.Tensor) -> bool:
    """Whether ``logits`` are one binary logit per example: shape ``(n,)`` or ``(n, 1)``."""
    return logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)


def num_classes(logits: torch.Tensor) -> int:
    """``2`` for binary logits ``(n,)``/``(n, 1)``, else ``C`` for ``(n, C)`` logits."""
    check_logits(logits)
    return 2 if is_binary(logits) else int(logits.shape[1])


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Raise ``ValueError`` unless ``logits`` is a floating tensor of shape ``(n,)``, ``(n, 1)`` or ``(n, C)``."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (n,), (n, 1) or (n, C), got {tuple(logits.shape)}")


def check_labels(logits: torch.Tensor, y: torch.Tensor, name: str = "y") -> None:
    """Raise ``ValueError`` unless ``y`` holds int64 class indices ``(n,)`` in ``[0, num_classes(logits))``.

    Cost: one reduction over ``y`` (a device synchronisation on GPU).
    """
    check_logits(logits)
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of int64 class indices, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise ValueError(f"{name} must hold int64 class indices, got dtype {y.dtype}")
    n = logits.shape[0]
    if y.shape != (n,):
        raise ValueError(f"shape mismatch: {name} must have shape ({n},) to match logits {tuple(logits.shape)}")
    if n:
        low, high = int(y.min()), int(y.max())
        classes = num_classes(logits)
        if low < 0 or high >= classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {classes - 1}] for logits of shape {tuple(logits.shape)}, "
                f"found labels in [{low}, {high}]"
            )


def per_example_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n,)`` cross-entropy of each example: ``log(1 + exp(-r_i))`` (binary, Eq. 9) or ``-log softmax_y``."""
    check_labels(logits, y)
    if is_binary(logits):
        return functional.binary_cross_entropy_with_logits(logits.reshape(-1), y.to(logits.dtype), reduction="none")
    return functional.cross_entropy(logits, y, reduction="none")


def check_lam(lam: float, name: str = "lam") -> float:
    """A regularisation strength: a finite real ``>= 0``."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number >= 0, got {lam!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (a penalty strength), got {lam!r}")
    return value


def _check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    return reduction


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def group_means(values: torch.Tensor, group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` within each group, from one scatter (no Python loop over groups).

    Args:
        values: ``(n,)`` per-example values (e.g. cross-entropies).
        group: ``(n,)`` int64 group / environment ids in ``[0, n_groups)``.
        n_groups: number of groups.

    Returns:
        ``(means, counts)``, both ``(n_groups,)``; a group absent from the batch has mean 0 and count 0.
    """
    if values.ndim != 1 or group.shape != values.shape:
        raise ValueError(
            f"values and group must both have shape (n,), got {tuple(values.shape)} and {tuple(group.shape)}"
        )
    counts = torch.bincount(group, minlength=n_groups)[:n_groups]
    sums = values.new_zeros(n_groups).index_add(0, group, values)
    return sums / counts.clamp(min=1).to(values.dtype), counts


# --------------------------------------------------------------------------------------------------------------
# Spectral Decoupling (Section 3.5)
# --------------------------------------------------------------------------------------------------------------
def spectral_decoupling(
    logits: torch.Tensor, lam: float, gamma: float = 0.0, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Spectral Decoupling, ``λ/2 ‖ŷ_i - γ‖²`` per example (Eq. 25 with γ = 0, Eq. 28 with a shared γ).

    For multi-class logits ``(n, C)`` the squared norm runs over all ``C`` logits of an example ("SD on all
    logits"); for binary logits it is ``(ŷ_i - γ)²``.

    Args:
        logits: ``(n,)``, ``(n, 1)`` or ``(n, C)``.
        lam: λ >= 0. With ``reduction="mean"`` this is the λ of Eq. 25 (see the module docstring); the released
            code's ``sd_coef`` is ``λ/2``.
        gamma: γ of Eq. 28, the value logits are pulled toward (0 for Eq. 25).
        reduction: ``"mean"`` over examples (default), ``"sum"`` (Eq. 25 literally) or ``"none"`` (``(n,)``).

    Returns:
        A scalar, or ``(n,)`` for ``reduction="none"``.
    """
    check_logits(logits)
    lam = check_lam(lam)
    _check_reduction(reduction)
    squared = (logits - float(gamma)).square()
    per_example = squared.reshape(squared.shape[0], -1).sum(dim=1)
    return _reduce(0.5 * lam * per_example, reduction)


def _per_class(values: Sequence[float] | torch.Tensor, classes: int, name: str, like: torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1)
    if tensor.shape != (classes,):
        raise ValueError(f"{name} must give one value per class ({classes}), got {tuple(tensor.shape)} values")
    if not torch.all(torch.isfinite(tensor)):
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
    return tensor


def class_conditional_sd(
    logits: torch.Tensor,
    y: torch.Tensor,
    lam: Sequence[float] | torch.Tensor,
    gamma: Sequence[float] | torch.Tensor,
    reduction: ClassReduction = "class_mean",
) -> torch.Tensor:
    """Class-conditional Spectral Decoupling (Eq. 28 with λ and γ tuned per class, the CelebA experiment).

    Each example ``i`` of class ``c = y_i`` contributes ``λ_c/2 ‖ŷ_i - γ_c‖²``. γ is the **raw target logit**,
    not a signed margin: with the paper's CelebA values (``γ_0 = 0.44``, ``γ_1 = 2.5``, App. A.3) class-0 logits are
    pulled toward ``+0.44``, i.e. slightly toward the *other* class's side, exactly as the released code does
    (``(yhat[y == 0] - 0.44)²``).

    Args:
        logits: ``(n,)``, ``(n, 1)`` or ``(n, C)``.
        y: ``(n,)`` int64 labels.
        lam: ``C`` values λ_c >= 0 (binary: 2).
        gamma: ``C`` values γ_c.
        reduction: how examples are combined:

            * ``"class_mean"`` (default, the released code): ``Σ_c λ_c/2 · mean_{i: y_i = c} ‖ŷ_i - γ_c‖²``; a class
              absent from the batch contributes 0. The released code writes ``sp · mean_c(...)`` per class, so
              ``sp = λ_c / 2``. This equals ``"mean"`` with ``λ_c`` scaled by ``n / n_c``.
            * ``"sum"``: Eq. 28 summed over examples; ``"mean"``: that sum divided by ``n``; ``"none"``: ``(n,)``.

    Returns:
        A scalar, or ``(n,)`` for ``reduction="none"``.
    """
    check_labels(logits, y)
    _check_reduction(reduction, CLASS_REDUCTIONS)
    classes = num_classes(logits)
    lam_c = _per_class(lam, classes, "lam", logits)
    if torch.any(lam_c < 0):
        raise ValueError(f"lam must be >= 0 for every class, got {lam_c.tolist()}")
    gamma_c = _per_class(gamma, classes, "gamma", logits)
    flat = logits.reshape(logits.shape[0], -1)
    distance = (flat - gamma_c[y].unsqueeze(1)).square().sum(dim=1)
    if reduction == "class_mean":
        means, _ = group_means(distance, y, classes)
        return 0.5 * (lam_c * means).sum()
    return _reduce(0.5 * lam_c[y] * distance, reduction)


# --------------------------------------------------------------------------------------------------------------
# Invariance penalties
# --------------------------------------------------------------------------------------------------------------
def _dummy_scale_gradient_terms(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n,)`` terms whose mean is ``d/ds CE(s · ŷ, y)`` at ``s = 1``: ``(σ(ŷ) - y) ŷ`` or ``(softmax - e_y) · ŷ``."""
    if is_binary(logits):
        flat = logits.reshape(-1)
        return (torch.sigmoid(flat) - y.to(flat.dtype)) * flat
    residual = torch.softmax(logits, dim=1) - functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    return (residual * logits).sum(dim=1)


def irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IRMv1 penalty of one environment, ``(d/ds mean_i CE(s · ŷ_i, y_i) at s = 1)²`` (Arjovsky et al. 2019).

    The reference implementation builds this with ``autograd.grad(..., create_graph=True)`` on a dummy scale; the
    derivative has the closed form ``mean_i (σ(ŷ_i) - y_i) ŷ_i`` (binary) or ``mean_i (softmax(ŷ_i) - e_{y_i}) · ŷ_i``
    (multi-class), which we use: the same function of the logits (tested against the autograd form), with no
    double-backward graph.

    Args:
        logits: ``(n,)``, ``(n, 1)`` or ``(n, C)`` logits of one environment.
        y: ``(n,)`` int64 labels.

    Returns:
        A scalar ``>= 0``; 0 exactly when the scale 1 is a stationary point of the environment's risk.
    """
    check_labels(logits, y)
    if logits.shape[0] == 0:
        raise ValueError("irm_penalty needs at least one example, got an empty environment")
    return _dummy_scale_gradient_terms(logits, y).mean().square()


def irm_penalty_per_group(
    logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`irm_penalty` of every environment at once, from the logits of one forward pass over all of them.

    Returns:
        ``(penalties, counts)``, both ``(n_groups,)``; environments absent from the batch have penalty 0 and count 0.
    """
    check_labels(logits, y)
    derivatives, counts = group_means(_dummy_scale_gradient_terms(logits, y), group, n_groups)
    return derivatives.square(), counts


def rex_penalty(env_losses: torch.Tensor) -> torch.Tensor:
    """V-REx penalty: the variance of the environment risks, ``mean_e (R_e - mean_e R_e)²`` (Krueger et al. 2021).

    This is the population variance (divide by ``m``, as DomainBed does). The V-REx paper's objective is
    ``Σ_e R_e + β Var(R)``; its released Colored MNIST code (two environments) writes ``(R_1 - R_2)²``, which is
    ``4 Var(R)``.

    Args:
        env_losses: ``(m,)`` risks of ``m >= 1`` environments.

    Returns:
        A scalar ``>= 0``, exactly 0 when all risks are equal.
    """
    if not isinstance(env_losses, torch.Tensor) or env_losses.ndim != 1 or env_losses.shape[0] == 0:
        shape = tuple(env_losses.shape) if isinstance(env_losses, torch.Tensor) else type(env_losses).__name__
        raise ValueError(f"env_losses must be a non-empty 1-D tensor of environment risks, got {shape}")
    return (env_losses - env_losses.mean()).square().mean()

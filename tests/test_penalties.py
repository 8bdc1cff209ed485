"""Tests of gradstarve.penalties: float64 gradchecks, closed forms against autograd / reference formulas, the
equivalences the methods rely on, and clear errors. Tolerances are stated where they are used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch.autograd import gradcheck
from torch.nn import functional

from gradstarve import penalties
from gradstarve.penalties import (
    class_conditional_sd,
    group_means,
    irm_penalty,
    irm_penalty_per_group,
    rex_penalty,
    spectral_decoupling,
)


def _data(n: int = 12, classes: int | None = None, seed: int = 0, shape: str = "column"):
    """float64 logits (requires_grad) and int64 labels. classes=None: binary logits of the given shape."""
    g = torch.Generator().manual_seed(seed)
    if classes is None:
        size = (n, 1) if shape == "column" else (n,)
        logits = torch.randn(size, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 2, (n,), generator=g)
    else:
        logits = torch.randn(n, classes, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, classes, (n,), generator=g)
    return logits, y


def _reference_irm_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The reference implementation: gradient of the mean loss w.r.t. a dummy scale, built by double backward."""
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    if penalties.is_binary(logits):
        loss = functional.binary_cross_entropy_with_logits(logits.reshape(-1) * scale, y.to(logits.dtype))
    else:
        loss = functional.cross_entropy(logits * scale, y)
    (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
    return grad.square()


# ------------------------------------------------------------------------------------------------- gradchecks
@pytest.mark.parametrize("classes", [None, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_spectral_decoupling(classes, reduction):
    logits, _ = _data(classes=classes)
    assert gradcheck(lambda z: spectral_decoupling(z, 0.3, gamma=0.7, reduction=reduction), (logits,))


@pytest.mark.parametrize("classes", [None, 3])
@pytest.mark.parametrize("reduction", ["class_mean", "mean", "sum", "none"])
def test_gradcheck_class_conditional_sd(classes, reduction):
    logits, y = _data(classes=classes)
    k = 2 if classes is None else classes
    lam, gamma = np.linspace(0.1, 0.5, k).tolist(), np.linspace(-1.0, 2.5, k).tolist()
    assert gradcheck(lambda z: class_conditional_sd(z, y, lam, gamma, reduction=reduction), (logits,))


@pytest.mark.parametrize("classes", [None, 4])
def test_gradcheck_irm_penalty(classes):
    logits, y = _data(classes=classes)
    assert gradcheck(lambda z: irm_penalty(z, y), (logits,))
    group = torch.arange(logits.shape[0]) % 3
    assert gradcheck(lambda z: irm_penalty_per_group(z, y, group, 3)[0], (logits,))


def test_gradcheck_rex_penalty_and_group_means():
    risks = torch.tensor([0.3, 0.9, 0.4], dtype=torch.float64, requires_grad=True)
    assert gradcheck(rex_penalty, (risks,))
    values = torch.rand(10, dtype=torch.float64, requires_grad=True)
    group = torch.tensor([0, 1, 1, 2, 0, 0, 2, 1, 1, 0])
    assert gradcheck(lambda v: group_means(v, group, 4)[0], (values,))


# ------------------------------------------------------------------------------------------------- spectral decoupling
def test_spectral_decoupling_normalisation():
    """mean: λ/2 mean ŷ² (= sd_coef · mean ŷ² of the released code with sd_coef = λ/2); sum: λ/2 Σ ŷ² (Eq. 25)."""
    logits, _ = _data(n=9, shape="flat")
    z = logits.detach()
    assert spectral_decoupling(z, 0.4).item() == pytest.approx(0.2 * float((z**2).mean()), rel=1e-14)
    assert spectral_decoupling(z, 0.4, reduction="sum").item() == pytest.approx(0.2 * float((z**2).sum()), rel=1e-14)
    torch.testing.assert_close(spectral_decoupling(z, 0.4, gamma=1.5, reduction="none"), 0.2 * (z - 1.5) ** 2)
    # (n,) and (n, 1) logits are the same binary model
    torch.testing.assert_close(spectral_decoupling(z[:, None], 0.4), spectral_decoupling(z, 0.4), rtol=0, atol=0)
    # multi-class: the squared norm of all logits of an example
    multi, _ = _data(classes=3)
    expected = 0.2 * (multi.detach() ** 2).sum(dim=1).mean()
    torch.testing.assert_close(spectral_decoupling(multi.detach(), 0.4), expected, rtol=1e-14, atol=0)


def test_class_conditional_sd_matches_released_celeba_code():
    """Released Table_2/loss.py (mode spw3): sp·mean((ŷ[y=1] - 2.5)²) + sp·mean((ŷ[y=0] - 0.44)²), sp = λ/2."""
    logits, y = _data(n=20, shape="column")
    z = logits.detach()
    sp = 0.05
    released = sp * ((z[y == 1] - 2.5) ** 2).mean() + sp * ((z[y == 0] - 0.44) ** 2).mean()
    ours = class_conditional_sd(z, y, [2 * sp, 2 * sp], [0.44, 2.5])
    assert ours.item() == pytest.approx(released.item(), rel=1e-14)
    # per class λ; "mean" is the per-example sum over n; "class_mean" = "mean" with λ_c scaled by n / n_c
    lam, gamma = [0.088, 0.012], [0.44, 2.5]
    per_example = class_conditional_sd(z, y, lam, gamma, reduction="none")
    manual = torch.tensor(lam, dtype=z.dtype)[y] / 2 * (z.reshape(-1) - torch.tensor(gamma, dtype=z.dtype)[y]) ** 2
    torch.testing.assert_close(per_example, manual, rtol=1e-14, atol=0)
    counts = torch.bincount(y, minlength=2).double()
    scaled = [lam[c] * len(y) / counts[c].item() for c in range(2)]
    assert class_conditional_sd(z, y, lam, gamma).item() == pytest.approx(
        class_conditional_sd(z, y, scaled, gamma, reduction="mean").item(), rel=1e-13
    )
    # A class absent from the batch contributes nothing
    only_ones = torch.ones_like(y)
    assert class_conditional_sd(z, only_ones, [123.0, 0.4], gamma).item() == pytest.approx(
        0.2 * float(((z.reshape(-1) - 2.5) ** 2).mean()), rel=1e-14
    )


def test_class_conditional_sd_with_equal_classes_is_spectral_decoupling():
    logits, y = _data(classes=3)
    z = logits.detach()
    torch.testing.assert_close(
        class_conditional_sd(z, y, [0.3] * 3, [0.5] * 3, reduction="mean"), spectral_decoupling(z, 0.3, 0.5)
    )


# ------------------------------------------------------------------------------------------------- IRM
@pytest.mark.parametrize("classes", [None, 3])
@pytest.mark.parametrize("shape", ["column", "flat"])
def test_irm_penalty_equals_double_backward_reference(classes, shape):
    """The closed form equals the autograd dummy-scale penalty, in value and in gradient (1e-12)."""
    logits, y = _data(n=15, classes=classes, shape=shape, seed=3)
    ours = irm_penalty(logits, y)
    reference = _reference_irm_penalty(logits, y)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("classes", [None, 3])
def test_irm_penalty_vanishes_at_the_optimal_scale_only(classes):
    """At s* = argmin_s R(s · ŷ) the dummy-scale derivative is 0; elsewhere the penalty is > 0."""
    logits, y = _data(n=40, classes=classes, seed=5)
    # Informative but not separable logits, so that the optimal scale is of order 1
    z = 2.0 * logits.detach() + (functional.one_hot(y, 3).double() if classes else (2.0 * y - 1.0)[:, None])

    def risk(s: float) -> float:
        return float(penalties.per_example_cross_entropy(s * z, y).mean())

    s_star = minimize_scalar(risk, bounds=(1e-3, 50.0), method="bounded", options={"xatol": 1e-12}).x
    at_optimum = irm_penalty(s_star * z, y).item()
    assert 0.3 < s_star < 10
    assert at_optimum < 1e-16  # the derivative is about 1e-9 at the solver's tolerance
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert irm_penalty(factor * s_star * z, y).item() > 1e-4


def test_irm_penalty_per_group_equals_per_environment_penalties():
    logits, y = _data(n=30, seed=7)
    group = torch.tensor([0, 2] * 15)  # group 1 absent
    values, counts = irm_penalty_per_group(logits, y, group, 3)
    assert counts.tolist() == [15, 0, 15]
    for g in (0, 2):
        mask = group == g
        assert values[g].item() == pytest.approx(irm_penalty(logits[mask], y[mask]).item(), rel=1e-12)
    assert values[1].item() == 0.0


# ------------------------------------------------------------------------------------------------- V-REx
def test_rex_penalty_is_the_variance_of_environment_risks():
    risks = torch.tensor([0.2, 0.7, 0.45, 0.1], dtype=torch.float64)
    assert rex_penalty(risks).item() == pytest.approx(np.var(risks.numpy()), rel=1e-14)
    two = torch.tensor([0.3, 0.8], dtype=torch.float64)
    assert rex_penalty(two).item() == pytest.approx((0.3 - 0.8) ** 2 / 4, rel=1e-14)  # released code: (R1 - R2)²


@pytest.mark.parametrize("value", [0.0, 0.1, 0.6931471805599453, 3.7])
@pytest.mark.parametrize("m", [1, 2, 5])
def test_rex_penalty_is_zero_for_equal_losses(value, m):
    risks = torch.full((m,), value, dtype=torch.float64, requires_grad=True)
    penalty = rex_penalty(risks)
    assert abs(penalty.item()) <= 1e-30
    (grad,) = torch.autograd.grad(penalty, risks)
    assert torch.all(grad.abs() <= 1e-15)


def test_group_means_handles_absent_groups():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    means, counts = group_means(values, torch.tensor([0, 0, 2, 2]), 3)
    assert means.tolist() == [1.5, 0.0, 3.5] and counts.tolist() == [2, 0, 2]


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), "big"])
def test_bad_lambda_is_rejected(lam):
    logits, y = _data()
    with pytest.raises(ValueError, match="lam"):
        spectral_decoupling(logits, lam)
    with pytest.raises(ValueError, match="lam"):
        class_conditional_sd(logits, y, [0.1, lam] if lam != "big" else [0.1, -1.0], [0.0, 0.0])


def test_labels_are_checked():
    logits, y = _data()
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\].*found labels in \[0, 2\]"):
        irm_penalty(logits, torch.tensor([0, 2] * 6))
    with pytest.raises(ValueError, match=r"found labels in \[-1, 1\]"):
        penalties.per_example_cross_entropy(logits, torch.tensor([-1, 1] * 6))
    with pytest.raises(ValueError, match="int64"):
        irm_penalty(logits, y.float())
    with pytest.raises(ValueError, match="shape mismatch"):
        irm_penalty(logits, y[:-1])
    multi, _ = _data(classes=3)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        class_conditional_sd(multi, torch.full((12,), 3), [0.1] * 3, [0.0] * 3)


def test_other_bad_inputs_are_rejected():
    logits, y = _data()
    with pytest.raises(ValueError, match="reduction"):
        spectral_decoupling(logits, 0.1, reduction="avg")
    with pytest.raises(ValueError, match="one value per class"):
        class_conditional_sd(logits, y, [0.1, 0.2, 0.3], [0.0, 0.0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        rex_penalty(torch.zeros(0))
    with pytest.raises(ValueError, match="floating-point"):
        spectral_decoupling(torch.ones(3, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match=r"shape \(n,\), \(n, 1\) or \(n, C\)"):
        spectral_decoupling(torch.ones(3, 2, 2), 0.1)

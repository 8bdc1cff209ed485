"""Tests of gradstarve.losses: SpectralDecouplingLoss as a drop-in for torch's losses, the SD schedules and the
generalized cross-entropy. Tolerances are stated where they are used."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.nn import functional

from gradstarve.losses import SpectralDecouplingLoss, generalized_cross_entropy, sd_schedule
from gradstarve.penalties import class_conditional_sd, per_example_cross_entropy, spectral_decoupling


def _binary(n: int = 10, shape: tuple[int, ...] = (10, 1), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (n,), generator=g)
    return logits, y


def _multi(n: int = 10, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64, requires_grad=True)
    return logits, torch.randint(0, classes, (n,), generator=g)


# ------------------------------------------------------------------------------------------------- drop-in
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(10,), (10, 1)])
def test_lam_zero_equals_bce_with_logits(reduction, shape):
    logits, y = _binary(shape=shape)
    target = y.to(torch.float64).reshape(shape)
    expected = nn.BCEWithLogitsLoss(reduction=reduction)(logits, target)
    ours = SpectralDecouplingLoss(lam=0.0, reduction=reduction)(logits, target)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    if shape == (10, 1):  # an int64 (n,) target is accepted for an (n, 1) input
        ours_index = SpectralDecouplingLoss(lam=0.0, reduction=reduction)(logits, y)
        torch.testing.assert_close(ours_index, expected, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_lam_zero_equals_cross_entropy(reduction):
    logits, y = _multi()
    expected = nn.CrossEntropyLoss(reduction=reduction)(logits, y)
    ours = SpectralDecouplingLoss(lam=0.0, reduction=reduction)(logits, y)
    assert ours.shape == expected.shape
    # torch reduces inside its kernel, we reduce the (n,) losses: equal up to summation order (1e-14)
    torch.testing.assert_close(ours, expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_penalised_loss_is_cross_entropy_plus_half_lambda_logit_norm(reduction):
    logits, y = _binary(shape=(10,))
    target = y.double()
    lam, gamma = 0.3, -0.2
    expected = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = expected + lam / 2 * (logits - gamma) ** 2
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]
    ours = SpectralDecouplingLoss(lam=lam, gamma=gamma, reduction=reduction)(logits, target)
    torch.testing.assert_close(ours, expected, rtol=1e-14, atol=0)
    multi, labels = _multi()
    expected = functional.cross_entropy(multi, labels, reduction="none") + lam / 2 * (multi**2).sum(dim=1)
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum()}[reduction]
    torch.testing.assert_close(
        SpectralDecouplingLoss(lam, reduction=reduction)(multi, labels), expected, rtol=1e-14, atol=0
    )


def test_gradcheck_spectral_decoupling_loss():
    logits, y = _binary()
    criterion = SpectralDecouplingLoss(lam=0.2, gamma=0.5).eval()
    assert gradcheck(lambda z: criterion(z, y), (logits,))
    multi, labels = _multi()
    assert gradcheck(lambda z: SpectralDecouplingLoss(lam=[0.1, 0.2, 0.3, 0.4], gamma=1.0)(z, labels), (multi,))


def test_per_class_loss_and_released_class_mean():
    logits, y = _binary(n=16, shape=(16, 1), seed=4)
    lam, gamma = [0.088, 0.012], [0.44, 2.5]
    nll = per_example_cross_entropy(logits, y)
    per_example = SpectralDecouplingLoss(lam, gamma, reduction="none")(logits, y.double()[:, None])
    expected = nll + class_conditional_sd(logits, y, lam, gamma, reduction="none")
    torch.testing.assert_close(per_example.reshape(-1), expected, rtol=1e-14, atol=0)
    class_mean = SpectralDecouplingLoss(lam, gamma, class_mean=True)(logits, y)
    torch.testing.assert_close(class_mean, nll.mean() + class_conditional_sd(logits, y, lam, gamma), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------- schedules
def test_sd_schedules():
    assert sd_schedule(0, "constant") == sd_schedule(10**6, "constant", 5) == (1.0, 1.0)
    assert [sd_schedule(s, "step", 3).penalty for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert [sd_schedule(s, "linear", 4).penalty for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert sd_schedule(7, "linear", 0).penalty == 1.0
    # released Colored MNIST code: nll + sd_coef·sd before step T, sd_coef·(sd + nll) from step T (sd_coef = λ/2)
    assert sd_schedule(449, "paper_released", 450, lam=4e-5) == (1.0, 1.0)
    assert sd_schedule(450, "paper_released", 450, lam=4e-5) == (2e-5, 1.0)


def test_paper_released_schedule_reproduces_the_released_loss():
    logits, y = _binary(shape=(10, 1))
    target = y.double()[:, None]
    sd_coef = 2e-5
    nll = functional.binary_cross_entropy_with_logits(logits, target)
    sd = (logits**2).mean()
    criterion = SpectralDecouplingLoss(lam=2 * sd_coef, schedule="paper_released", anneal_steps=450)
    torch.testing.assert_close(criterion(logits, target, step=10), nll + sd_coef * sd, rtol=1e-14, atol=0)
    torch.testing.assert_close(criterion(logits, target, step=450), sd_coef * (sd + nll), rtol=1e-14, atol=0)


def test_internal_step_counter_advances_in_training_mode_only():
    logits, y = _binary(shape=(10,))
    target = y.double()
    criterion = SpectralDecouplingLoss(lam=0.5, schedule="step", anneal_steps=2)
    plain = functional.binary_cross_entropy_with_logits(logits, target)
    penalised = plain + spectral_decoupling(logits, 0.5)
    values = [criterion(logits, target) for _ in range(3)]
    torch.testing.assert_close(values[0], plain, rtol=0, atol=0)
    torch.testing.assert_close(values[1], plain, rtol=0, atol=0)
    torch.testing.assert_close(values[2], penalised, rtol=0, atol=0)
    assert int(criterion.num_steps) == 3
    criterion.eval()
    criterion(logits, target)
    criterion(logits, target, step=0)
    assert int(criterion.num_steps) == 3
    assert "num_steps" in criterion.state_dict()


# ------------------------------------------------------------------------------------------------- GCE
def test_generalized_cross_entropy():
    logits, y = _binary(shape=(10, 1))
    q = 0.7
    p = torch.sigmoid((2 * y - 1).double() * logits.reshape(-1))
    torch.testing.assert_close(generalized_cross_entropy(logits, y, q, "none"), (1 - p**q) / q, rtol=1e-13, atol=0)
    multi, labels = _multi()
    p_multi = torch.softmax(multi, dim=1).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(generalized_cross_entropy(multi, labels, q), ((1 - p_multi**q) / q).mean())
    assert gradcheck(lambda z: generalized_cross_entropy(z, labels, q), (multi,))
    # Its gradient is p_y^q times the cross-entropy's (LfF's released surrogate is q times this)
    (grad_gce,) = torch.autograd.grad(generalized_cross_entropy(multi, labels, q, "sum"), multi)
    weight = (p_multi.detach() ** q)[:, None]
    (grad_ce,) = torch.autograd.grad(per_example_cross_entropy(multi, labels).sum(), multi)
    torch.testing.assert_close(grad_gce, weight * grad_ce, rtol=1e-12, atol=1e-15)
    # q -> 0 recovers the cross-entropy (error O(q · CE²))
    ce = per_example_cross_entropy(multi, labels)
    torch.testing.assert_close(generalized_cross_entropy(multi, labels, 1e-9, "none"), ce, rtol=1e-7, atol=0)


# ------------------------------------------------------------------------------------------------- errors
def test_clear_errors():
    logits, y = _binary(shape=(10,))
    with pytest.raises(ValueError, match="lam"):
        SpectralDecouplingLoss(lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        SpectralDecouplingLoss(lam=[0.1, -0.2])
    with pytest.raises(ValueError, match="labels out of range"):
        SpectralDecouplingLoss(0.1)(logits, torch.full((10,), 2.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        SpectralDecouplingLoss(0.1)(_multi()[0], torch.full((10,), 4))
    with pytest.raises(ValueError, match="reduction"):
        SpectralDecouplingLoss(0.1, reduction="batchmean")
    with pytest.raises(ValueError, match="class_mean"):
        SpectralDecouplingLoss(0.1, class_mean=True)
    with pytest.raises(ValueError, match="schedule"):
        SpectralDecouplingLoss(0.1, schedule="cosine")
    with pytest.raises(ValueError, match="shape mismatch"):
        SpectralDecouplingLoss(0.1)(logits, y[:5].double())
    with pytest.raises(ValueError, match="q must lie"):
        generalized_cross_entropy(logits, y, q=0.0)
    with pytest.raises(ValueError, match="step"):
        sd_schedule(-1, "step", 3)


def test_soft_binary_targets_work_as_in_bce_with_logits():
    logits, _ = _binary(shape=(10, 1))
    soft = torch.linspace(0, 1, 10, dtype=torch.float64)[:, None]
    expected = nn.BCEWithLogitsLoss()(logits, soft) + spectral_decoupling(logits, 0.1)
    torch.testing.assert_close(SpectralDecouplingLoss(0.1)(logits, soft), expected, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="hard labels"):
        SpectralDecouplingLoss([0.1, 0.2])(logits, soft)

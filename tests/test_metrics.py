"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradstarve import metrics


def test_accuracy_binary_and_multiclass():
    logits = torch.tensor([2.0, -1.0, 0.5, -0.1])
    y = torch.tensor([1, 0, 0, 0])
    assert metrics.accuracy(logits, y) == pytest.approx(0.75)
    assert metrics.accuracy(logits[:, None], y) == pytest.approx(0.75)
    multi = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert metrics.accuracy(multi, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


def test_group_and_worst_group_accuracy():
    logits = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    y = torch.tensor([1, 0, 0, 1, 1])
    group = torch.tensor([0, 0, 1, 1, 2])
    values, counts = metrics.group_accuracies(logits, y, group, n_groups=4)
    np.testing.assert_allclose(values[:3], [0.5, 0.5, 1.0])
    assert np.isnan(values[3])
    assert counts.tolist() == [2, 2, 1, 0]
    assert metrics.worst_group_accuracy(logits, y, group, 4) == pytest.approx(0.5)


def test_entropy_is_stable_and_correct():
    logits = torch.tensor([0.0, 3.0, -3.0, 800.0, -800.0], dtype=torch.float64)
    p = torch.sigmoid(logits[:3])
    expected = -(p * p.log() + (1 - p) * (1 - p).log())
    np.testing.assert_allclose(metrics.binary_entropy(logits)[:3], expected, rtol=1e-12)
    assert metrics.binary_entropy(logits)[3:].abs().max() < 1e-300 * 1e10
    assert metrics.mean_binary_entropy(torch.zeros(4)) == pytest.approx(np.log(2))


def test_binomial_interval_known_values():
    from scipy.stats import binomtest

    lower, upper = metrics.binomial_interval(30, 44)
    reference = binomtest(30, 44).proportion_ci(confidence_level=0.95, method="exact")  # Clopper-Pearson
    assert (lower, upper) == pytest.approx((reference.low, reference.high), rel=1e-10)
    assert upper - lower == pytest.approx(0.2897, abs=1e-4)  # 29 points wide for 44 blond males (CelebA subset)
    assert metrics.binomial_interval(0, 10)[0] == 0.0 and metrics.binomial_interval(10, 10)[1] == 1.0


def test_margin_of_a_straight_boundary():
    grid = np.linspace(-2, 2, 101)
    gx, _ = np.meshgrid(grid, grid, indexing="ij")
    values = gx - 0.3  # boundary: the vertical line x = 0.3
    boundary = metrics.decision_boundary(grid, grid, values)
    np.testing.assert_allclose(boundary[:, 0], 0.3, atol=1e-12)
    points = np.array([[1.3, 0.0], [-0.7, 1.0], [0.8, -1.5]])
    smallest, mean = metrics.input_margin(points, boundary)
    # nearest boundary *points* are 0.04 apart along the line: error <= h²/(8 d) = 4e-4 at d = 0.5
    assert smallest == pytest.approx(0.5, abs=4e-4)
    assert mean == pytest.approx((1.0 + 1.0 + 0.5) / 3, abs=4e-4)
    assert metrics.input_margin(points, np.empty((0, 2))) == (float("inf"), float("inf"))


def test_margin_of_a_circle_is_accurate_to_the_grid_resolution():
    grid = np.linspace(-2, 2, 201)
    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    boundary = metrics.decision_boundary(grid, grid, np.hypot(gx, gy) - 1.0)
    assert np.abs(np.hypot(*boundary.T) - 1.0).max() < 4e-4  # linear interpolation of a smooth level set
    smallest, _ = metrics.input_margin(np.array([[0.0, 0.0]]), boundary)
    assert smallest == pytest.approx(1.0, abs=4e-4)


def test_errors():
    with pytest.raises(ValueError, match="rows"):
        metrics.accuracy(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="group ids"):
        metrics.group_accuracies(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]), 2)
    with pytest.raises(ValueError, match="successes"):
        metrics.binomial_interval(5, 3)
    with pytest.raises(ValueError, match="values must have shape"):
        metrics.decision_boundary(np.arange(3.0), np.arange(4.0), np.zeros((4, 3)))

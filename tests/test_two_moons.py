"""The two-moons data of Fig. 1-3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from gradstarve.data.two_moons import two_moons


def linearly_separable(x: np.ndarray, signs: np.ndarray) -> bool:
    """Exact test: is there (w, b) with y (w·x + b) >= 1 for every point? (a linear programme, no tolerance)"""
    constraints = -(signs[:, None] * np.c_[x, np.ones(len(x))])
    result = linprog(np.zeros(3), A_ub=constraints, b_ub=-np.ones(len(x)), bounds=[(None, None)] * 3)
    return result.status == 0


def test_shapes_labels_and_balance():
    data = two_moons(n=300, seed=0)
    assert data.x.shape == (300, 2) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and set(data.y.tolist()) == {0, 1}
    assert int(data.y.sum()) == 150
    assert set(data.signed_labels().tolist()) == {-1.0, 1.0}
    assert data.group.eq(0).all()


@pytest.mark.parametrize("seed", range(5))
def test_separability_flips_with_the_sign_of_delta(seed):
    for delta, separable in ((0.1, True), (0.05, True), (-0.1, False), (-0.05, False)):
        data = two_moons(delta=delta, seed=seed)
        assert linearly_separable(data.x.double().numpy(), data.signed_labels().double().numpy()) is separable


def test_gap_lies_along_the_horizontal_axis():
    data = two_moons(delta=0.1, seed=1)
    x = data.x.numpy()
    assert x[data.y.numpy() == 1, 0].max() <= -0.1 + 1e-6
    assert x[data.y.numpy() == 0, 0].min() >= 0.1 - 1e-6


def test_deterministic_per_seed_and_different_across_seeds():
    assert torch.equal(two_moons(seed=3).x, two_moons(seed=3).x)
    assert not torch.equal(two_moons(seed=3).x, two_moons(seed=4).x)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"n": 1}, "n must"), ({"noise": -1.0}, "noise"), ({"delta": float("nan")}, "delta")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        two_moons(**kwargs)

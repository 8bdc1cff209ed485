"""The two-moons data of Section 4 and Fig. 1-3: two classes whose linear separability is set by Δ (``delta``).

Construction (the paper's released code, on top of the classic two interleaving half circles): the moons are
shifted, folded so that every point of class +1 has a negative second coordinate and every point of class -1 a
positive one, pushed apart by ``delta`` along that coordinate, and the axes are swapped. The classes are then
separated along the horizontal axis with a gap of ``2 * delta``: linearly separable when ``delta > 0`` and not when
``delta < 0`` (Fig. 2 (a) vs (b)). Noise is isotropic Gaussian with standard deviation ``noise``.
"""

from __future__ import annotations

import numpy as np
import torch

from gradstarve.data.base import LabelledData


def make_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (the classic "moons"), shuffled, with Gaussian noise.

    Returns ``x`` ``(n, 2)`` float64 and ``y`` ``(n,)`` int64 in {0, 1} (0: outer moon, ``n // 2`` points).
    """
    n_outer = n // 2
    n_inner = n - n_outer
    angles_outer = np.linspace(0, np.pi, n_outer)
    angles_inner = np.linspace(0, np.pi, n_inner)
    x = np.concatenate(
        [
            np.stack([np.cos(angles_outer), np.sin(angles_outer)], axis=1),
            np.stack([1 - np.cos(angles_inner), 1 - np.sin(angles_inner) - 0.5], axis=1),
        ]
    )
    y = np.concatenate([np.zeros(n_outer, dtype=np.int64), np.ones(n_inner, dtype=np.int64)])
    order = rng.permutation(n)
    x, y = x[order], y[order]
    return x + rng.normal(scale=noise, size=x.shape), y


def two_moons(
    n: int = 300, noise: float = 0.1, delta: float = 0.1, seed: int = 0, rotation: float = 0.0
) -> LabelledData:
    """The paper's two-moons training set.

    Args:
        n: number of points (the paper: 300), split evenly between the classes.
        noise: standard deviation of the Gaussian noise (the paper: 0.1).
        delta: Δ, half the gap between the classes along the horizontal axis; > 0 linearly separable
            (the paper: +0.1), < 0 overlapping (the paper: -0.1).
        seed: seeds a ``numpy.random.Generator`` for the shuffle and the noise.
        rotation: rotate the whole data set by this many degrees (Fig. 3's "45 deg rotation": the gap is then no
            longer aligned with an axis).

    Returns:
        :class:`LabelledData` with ``x`` ``(n, 2)`` float32, ``y`` int64 in {0, 1} (``data.signed_labels()`` gives the
        paper's {-1, +1}; class 1 lies left of the gap), ``group`` all 0, and ``metadata`` holding the parameters.
    """
    if not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if not np.isfinite(delta):
        raise ValueError(f"delta must be finite, got {delta!r}")
    if not np.isfinite(rotation):
        raise ValueError(f"rotation must be finite (degrees), got {rotation!r}")
    rng = np.random.default_rng(seed)
    x, y = make_moons(int(n), float(noise), rng)
    signs = 2.0 * y - 1.0
    x = x - np.stack([np.full(n, 0.5), 0.3 * signs], axis=1)
    x[:, 1] -= x[:, 1].mean()
    x[:, 1] *= np.sign(-x[:, 1] * signs)  # fold: class +1 below the axis, class -1 above
    x[:, 1] -= signs * delta
    x = x[:, ::-1].copy()  # the gap runs along the horizontal axis, as in Fig. 2
    if rotation:
        angle = np.radians(rotation)
        x = x @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return LabelledData(
        x=torch.from_numpy(x).float(),
        y=torch.from_numpy(y),
        group=torch.zeros(n, dtype=torch.int64),
        group_names=("all",),
        name=f"two-moons(delta={delta:g})",
        metadata={"n": int(n), "noise": float(noise), "delta": float(delta), "seed": seed, "rotation": rotation},
    )

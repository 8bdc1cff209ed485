"""Evaluation metrics shared by every experiment: accuracy, per-group and worst-group accuracy, predictive entropy,
binomial confidence intervals, and the input-space margin of a 2-D decision boundary (Fig. 1-3).

Pure functions on tensors / arrays. Binary models give one logit per example (shape ``(n,)`` or ``(n, 1)``, class 1
when the logit is > 0); multi-class models give ``(n, C)`` logits (class = argmax). Labels are int class indices.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.stats import beta


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class indices ``(n,)``: ``logit > 0`` for one logit per example, argmax for ``(n, C)``."""
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        return (logits.reshape(-1) > 0).long()
    if logits.ndim == 2:
        return logits.argmax(dim=1)
    raise ValueError(f"logits must have shape (n,), (n, 1) or (n, C), got {tuple(logits.shape)}")


def _check_pair(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.shape[0] != y.shape[0] or y.ndim != 1:
        raise ValueError(
            f"logits have {logits.shape[0]} rows but y has shape {tuple(y.shape)}; expected ({logits.shape[0]},)"
        )


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples whose predicted class equals ``y``."""
    _check_pair(logits, y)
    if y.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((predictions(logits) == y).double().mean())


def group_accuracies(
    logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and count per group id ``0..n_groups-1``: ``(accuracies, counts)``; empty groups get ``nan``."""
    _check_pair(logits, y)
    if group.shape != y.shape:
        raise ValueError(f"group must have shape {tuple(y.shape)}, got {tuple(group.shape)}")
    if group.numel() and (int(group.min()) < 0 or int(group.max()) >= n_groups):
        raise ValueError(f"group ids must lie in 0..{n_groups - 1}, got {int(group.min())}..{int(group.max())}")
    correct = (predictions(logits) == y).double()
    counts = torch.bincount(group, minlength=n_groups).double()
    hits = torch.bincount(group, weights=correct, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (hits / counts).numpy()
    return np.where(counts.numpy() > 0, values, np.nan), counts.numpy().astype(np.int64)


def worst_group_accuracy(logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor, n_groups: int) -> float:
    """Minimum accuracy over the non-empty groups (Table 2's worst-group accuracy)."""
    values, counts = group_accuracies(logits, y, group, n_groups)
    if not np.any(counts > 0):
        raise ValueError("worst-group accuracy of an empty set is undefined")
    return float(np.nanmin(values))


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-example entropy (nats) of the predicted Bernoulli distribution ``σ(logit)``; stable for large logits.

    ``H = softplus(-|ℓ|) + |ℓ| σ(-|ℓ|)`` equals ``-p log p - (1-p) log(1-p)`` with ``p = σ(ℓ)``.
    """
    logits = logits.reshape(-1)
    magnitude = logits.abs()
    return torch.nn.functional.softplus(-magnitude) + magnitude * torch.sigmoid(-magnitude)


def mean_binary_entropy(logits: torch.Tensor) -> float:
    """Mean predictive entropy in nats (Fig. 4's confidence measure; log 2 ≈ 0.693 is maximal uncertainty)."""
    return float(binary_entropy(logits).double().mean())


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a proportion, e.g. a worst-group accuracy on 44 examples."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    lower = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return lower, upper


def decision_boundary(grid_x: np.ndarray, grid_y: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Points of the zero level set of ``values`` on a regular 2-D grid, by linear interpolation along grid edges.

    Args:
        grid_x, grid_y: ``(G,)`` increasing coordinates of the grid lines.
        values: ``(G_x, G_y)`` logits with ``values[i, j]`` at ``(grid_x[i], grid_y[j])``.

    Returns:
        ``(m, 2)`` boundary points (empty if the logits never change sign).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(grid_x), len(grid_y)):
        raise ValueError(f"values must have shape {(len(grid_x), len(grid_y))}, got {values.shape}")
    points = []
    for axis in (0, 1):
        a = values[:-1, :] if axis == 0 else values[:, :-1]
        b = values[1:, :] if axis == 0 else values[:, 1:]
        crossing = (a > 0) != (b > 0)
        i, j = np.nonzero(crossing)
        t = a[i, j] / (a[i, j] - b[i, j])  # fraction of the edge where the linear interpolant is 0
        if axis == 0:
            points.append(np.stack([grid_x[i] + t * (grid_x[i + 1] - grid_x[i]), grid_y[j]], axis=1))
        else:
            points.append(np.stack([grid_x[i], grid_y[j] + t * (grid_y[j + 1] - grid_y[j])], axis=1))
    return np.concatenate(points) if points else np.empty((0, 2))


def input_margin(points: np.ndarray, boundary: np.ndarray) -> tuple[float, float]:
    """``(min, mean)`` Euclidean distance from ``points`` ``(n, 2)`` to the nearest boundary point (Fig. 1's margin).

    The distance is measured to the boundary points of :func:`decision_boundary`, spaced about one grid step ``h``
    apart along the boundary, which overestimates a distance ``d`` by at most about ``h² / (8 d)`` (4e-4 for the
    paper's 100 x 100 grid on [-2, 2]² at d = 0.5). ``inf`` if there is no boundary on the grid.
    """
    points = np.asarray(points, dtype=np.float64)
    if boundary.shape[0] == 0:
        return float("inf"), float("inf")
    distances, _ = cKDTree(boundary).query(points)
    return float(distances.min()), float(distances.mean())

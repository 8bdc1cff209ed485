"""Ours beside the paper, in one place: the paper's number for a metric, the difference in the paper's standard
deviations, and how a mean ± std is printed (every table uses these, so that a missing value always reads the same).

The numbers themselves live in :mod:`gradstarve.experiments.reproduce.paper_numbers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gradstarve.experiments.reproduce.paper_numbers import FIG4_ACCURACY, TABLE1, TABLE2, difference_in_std

__all__ = ["difference_in_std", "paper_number", "plus_minus", "sigma"]

#: How a missing value (no run finished, no paper number) prints in every table.
MISSING = "n/a"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plus_minus(mean: float | None, std: float | None, digits: int = 1) -> str:
    """``"mean ± std"`` with ``digits`` decimals; ``"mean"`` when the std is missing (one seed, or a paper number
    printed without one); :data:`MISSING` when the mean is (None or NaN)."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def sigma(value: float | None) -> str:
    """A difference in units of the paper's std, ``"+1.2σ"``; empty when there is none."""
    return "" if _missing(value) else f"{value:+.1f}σ"


def paper_number(
    dataset: str, algorithm: str, metric: str, data: Mapping[str, Any] | None = None
) -> tuple[float, float | None] | None:
    """The paper's ``(mean, std | None)`` in percent for ``metric`` (a metrics key) of ``algorithm`` on ``dataset``,
    or ``None``. Colored MNIST: Table 1 (``train/accuracy``, ``test/accuracy``; ERM on the channel sum, the IRM
    reference's grayscale model, is the paper's oracle row) and Fig. 4 (``fig4/<variant>/accuracy``); CelebA:
    Table 2 (``test/worst_group_accuracy``, ``test/accuracy`` as its average accuracy)."""
    if dataset == "colored-mnist":
        row = "oracle" if algorithm == "erm" and (data or {}).get("merge_channels") else algorithm
        column = {"train/accuracy": "train", "test/accuracy": "test"}.get(metric)
        if column is not None:
            return TABLE1.get(row, {}).get(column)
        if metric.startswith("fig4/") and metric.endswith("/accuracy"):
            value = FIG4_ACCURACY.get(algorithm, {}).get(metric.split("/")[1])
            return None if value is None else (value, None)
    if dataset == "celeba":
        column = {"test/worst_group_accuracy": "worst_group", "test/accuracy": "average"}.get(metric)
        if column is not None:
            return TABLE2.get(algorithm, {}).get(column)
    return None

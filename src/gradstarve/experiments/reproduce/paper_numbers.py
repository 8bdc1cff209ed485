"""The paper's reported numbers, in one place; every table prints them beside ours.

Accuracies are in percent, ``(mean, std)`` over the paper's 10 runs where the paper gives a std, else ``(value,
None)``. Sources: Table 1 and Table 2 of the paper, Fig. 4's annotations and App. A.2, and the released code's
``table_1.sh`` (whose printed results equal Table 1).
"""

from __future__ import annotations

#: Table 1, Colored MNIST after training (released code: ERM 1,001 / SD 2,001 / IRM 501 full-batch steps).
TABLE1: dict[str, dict[str, tuple[float, float | None]]] = {
    "erm": {"train": (91.1, 0.4), "test": (23.7, 0.8)},
    "vrex": {"train": (71.5, 1.0), "test": (68.7, 0.9)},
    "irm": {"train": (70.5, 0.6), "test": (67.1, 1.4)},
    "sd": {"train": (70.0, 0.9), "test": (68.4, 1.2)},
    "oracle": {"train": (73.5, 0.2), "test": (73.0, 0.4)},
    "random": {"train": (50.0, None), "test": (50.0, None)},
}

#: Fig. 4: accuracy (%) on the four test variants of Colored MNIST (App. A.2).
FIG4_ACCURACY: dict[str, dict[str, float]] = {
    "erm": {"gray-digit": 63.3, "color-digit": 23.9, "gray-blank": 49.9, "color-blank": 9.4},
    "sd": {"gray-digit": 68.3, "color-digit": 67.2, "gray-blank": 50.0, "color-blank": 9.4},
    "irm": {"gray-digit": 66.9, "color-digit": 66.6, "gray-blank": 49.7, "color-blank": 49.6},
}

#: Fig. 4: mean binary predictive entropy (nats) given in its caption: ERM and SD on colour + blank images.
FIG4_ENTROPY: dict[str, dict[str, float]] = {"erm": {"color-blank": 0.00}, "sd": {"color-blank": 0.41}}

#: Table 2, CelebA (Blond_Hair vs Male), ResNet-50, full data set: worst-group and average test accuracy.
TABLE2: dict[str, dict[str, tuple[float, float | None] | None]] = {
    "erm": {"worst_group": (40.35, 1.68), "average": (94.61, 0.67)},
    "sd": {"worst_group": (83.24, 2.01), "average": (91.64, 0.61)},
    "lff": {"worst_group": (81.24, 1.38), "average": None},
    "group_dro": {"worst_group": (87.78, 0.96), "average": (91.76, 0.28)},
}

#: Runs behind each reported mean.
PAPER_RUNS = 10


def difference_in_std(ours: float, paper: tuple[float, float | None] | None) -> float | None:
    """``(ours - paper mean) / paper std``: how many of the paper's standard deviations apart; ``None`` without a
    std (or a zero one)."""
    if paper is None or paper[1] in (None, 0.0):
        return None
    return (ours - paper[0]) / paper[1]

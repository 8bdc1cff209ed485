"""What every reproduction recipe returns, so that ``gradstarve reproduce`` can assemble one report from them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


class DataMissingError(Exception):
    """A reproduction cannot run because its data is not available; the message says what is missing and how to
    get it. ``gradstarve reproduce`` reports it and goes on with the other reproductions."""


@dataclass
class Reproduction:
    """The outcome of one recipe (one figure or table of the paper).

    Attributes:
        name: short id, e.g. ``"colored-mnist"``.
        title: what it reproduces, e.g. ``"Table 1 and Fig. 4: Colored MNIST"``.
        tables: named tables for a reader (the report prints them): our numbers with the paper's in adjacent
            columns where they exist, and the difference in units of the paper's standard deviation.
        figures: PNG files (a PDF beside each).
        notes: caveats a reader must know (selection rule, data subset, fewer seeds than the paper, ...).
        seconds: wall time of the recipe.
        files: every file written.
        data: named machine-readable tables, every column of every row (also written as CSV); may be empty when
            ``tables`` already holds everything.
        evidence: what the part showed, for the report's summary (:func:`evidence`): within the paper's 2σ, off by
            Nσ, a smoke test, checks that hold or fail, or no paper number. Empty: "ran".
    """

    name: str
    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    evidence: str = ""


def evidence(
    *, quick: bool = False, sigmas: Iterable[float | None] = (), checks: bool | None = None, what: str = ""
) -> str:
    """The summary status of a part, from what it measured.

    Args:
        quick: the part ran at smoke-test size: its numbers are not evidence, whatever they are.
        sigmas: differences from the paper in units of the paper's std (None / NaN: no paper number).
        checks: for parts without paper numbers, whether their stated checks hold.
        what: what the sigmas or checks are about, e.g. "test accuracy, 5 rows".
    """
    about = f" ({what})" if what else ""
    if quick:
        return "smoke test (quick settings): not evidence"
    values = [abs(float(v)) for v in sigmas if v is not None and not math.isnan(float(v))]
    if values:
        worst = max(values)
        if worst <= 2:
            return f"within the paper's 2σ{about}"
        outside = sum(v > 2 for v in values)
        return f"off by up to {worst:.1f}σ, {outside} of {len(values)} beyond 2σ{about}"
    if checks is not None:
        return f"checks hold{about}" if checks else f"checks FAIL{about}"
    return "ran; no paper number to compare with"


#: The progress callback a recipe may take: ``progress(name, done, total)``.
Progress = Callable[[str, int, int], None]


def pngs(files: Iterable[Path | str]) -> list[Path]:
    """The PNG files among ``files`` (a reproduction's figures; a PDF is written beside each)."""
    return [Path(path) for path in files if Path(path).suffix == ".png"]

"""What every reproduction recipe returns, so that ``gradstarve reproduce`` can assemble one report from them."""

from __future__ import annotations

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
    """

    name: str
    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)

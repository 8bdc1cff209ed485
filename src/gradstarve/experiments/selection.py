"""Model selection: which evaluation step of a run, and which hyperparameters of a search, are reported.

Every rule is stated here, once; tables say which rule produced them. A *run* is a list of metrics rows (one per
evaluation step, :func:`gradstarve.experiments.train.read_metrics`). Rules pick one row per run; hyperparameter
selection then compares settings by the mean, over their seeds, of the rule's score at the picked rows.

=============================  ==================================================================================
rule                           picks the evaluation step with ...
=============================  ==================================================================================
``last_step``                  the last step: the paper's protocol for Colored MNIST (a fixed number of steps)
``training_domain_validation`` the best accuracy on ``val``, a split held out of the *training* environments /
                               distribution (DomainBed's training-domain validation; no test information)
``worst_group_validation``     the best worst-group accuracy on ``val`` (needs group labels on validation data,
                               as Group DRO and the paper's CelebA rule assume)
``average_validation``         the best average accuracy on ``val`` (the paper's CelebA rule, Sec. 4)
``test_domain_oracle``         the best accuracy on ``test``: an oracle that looks at the test distribution,
                               reported only as such (the paper's Colored MNIST caveat: tuned on test)
=============================  ==================================================================================

Ties go to the earliest step (the first maximum).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SelectionRule:
    """``score_key`` of a metrics row is maximised; ``uses_test`` marks rules that peek at the test split."""

    name: str
    score_key: str | None
    description: str
    uses_test: bool = False


RULES: dict[str, SelectionRule] = {
    "last_step": SelectionRule("last_step", None, "last evaluation step (fixed training length)"),
    "training_domain_validation": SelectionRule(
        "training_domain_validation", "val/accuracy", "best accuracy on validation data from the training domains"
    ),
    "worst_group_validation": SelectionRule(
        "worst_group_validation", "val/worst_group_accuracy", "best worst-group accuracy on validation data"
    ),
    "average_validation": SelectionRule(
        "average_validation", "val/accuracy", "best average accuracy on validation data (the paper's CelebA rule)"
    ),
    "test_domain_oracle": SelectionRule(
        "test_domain_oracle", "test/accuracy", "best test accuracy: an ORACLE that peeks at the test data", True
    ),
}


def get_rule(name: str) -> SelectionRule:
    if name not in RULES:
        raise ValueError(f"unknown selection rule {name!r}; known rules: {', '.join(RULES)}")
    return RULES[name]


def candidate_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The evaluation rows a model may be selected from: never the untrained network (step 0), and for a staged
    method (rows logging ``train/stage``, e.g. JTT, whose first stage is an ERM model that only identifies errors)
    only rows of its last stage over the whole evaluation interval."""
    candidates = [row for row in rows if row["step"] > 0]
    stages = [row["train/stage"] for row in candidates if row.get("train/stage") is not None]
    if stages:
        last = max(stages)
        candidates = [row for row in candidates if row.get("train/stage") == last]
    return candidates


def select_step(rows: Sequence[Mapping[str, Any]], rule: str) -> Mapping[str, Any]:
    """The metrics row ``rule`` picks from one run's evaluation rows."""
    selection = get_rule(rule)
    if not rows:
        raise ValueError("a run with no evaluation rows cannot be selected from")
    if selection.score_key is None:
        return max(rows, key=lambda row: row["step"])
    missing = [row["step"] for row in rows if selection.score_key not in row]
    if missing:
        raise ValueError(
            f"rule {rule!r} needs {selection.score_key!r} in every metrics row (steps {missing[:5]} lack it): "
            "evaluate a 'val' split, e.g. with a val_fraction data option"
        )
    scores = np.array([float(row[selection.score_key]) for row in rows])
    return rows[int(np.nanargmax(scores))]


def score(row: Mapping[str, Any], rule: str) -> float:
    """The value ``rule`` maximises in ``row`` (for ``last_step``: the step, which only orders rows)."""
    selection = get_rule(rule)
    return float(row["step"] if selection.score_key is None else row[selection.score_key])


@dataclass(frozen=True)
class Selected:
    """The outcome of hyperparameter selection: the chosen setting and the picked row of each of its seeds."""

    key: Hashable
    rows: list[Mapping[str, Any]]
    validation_score: float
    candidates: int


def select_hyperparameters(runs: Mapping[Hashable, Sequence[Sequence[Mapping[str, Any]]]], rule: str) -> Selected:
    """Among hyperparameter settings (``key -> [rows of each seed's run]``), the one whose seeds' picked rows have
    the best mean score under ``rule``. ``last_step`` has no score, so it only accepts a single setting."""
    if not runs:
        raise ValueError("no runs to select from")
    selection = get_rule(rule)
    if selection.score_key is None and len(runs) > 1:
        raise ValueError("rule 'last_step' has no validation score to compare hyperparameter settings by")
    best: Selected | None = None
    for key, seed_runs in runs.items():
        picked = [select_step(rows, rule) for rows in seed_runs if rows]
        if not picked:
            continue
        value = float(np.mean([score(row, rule) for row in picked]))
        if best is None or value > best.validation_score:
            best = Selected(key, picked, value, len(runs))
    if best is None:
        raise ValueError("every run is empty")
    return best


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0, as the paper's ± over seeds), ignoring NaN."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std())

"""Each selection rule on hand-written metrics rows gives the expected choice."""

from __future__ import annotations

import math

import pytest

from gradstarve.experiments import selection
from gradstarve.experiments.reproduce.paper_numbers import TABLE1, difference_in_std

ROWS = [
    {"step": 0, "val/accuracy": 0.50, "val/worst_group_accuracy": 0.10, "test/accuracy": 0.30},
    {"step": 100, "val/accuracy": 0.80, "val/worst_group_accuracy": 0.40, "test/accuracy": 0.55},
    {"step": 200, "val/accuracy": 0.75, "val/worst_group_accuracy": 0.60, "test/accuracy": 0.70},
    {"step": 300, "val/accuracy": 0.80, "val/worst_group_accuracy": 0.50, "test/accuracy": 0.65},
]


@pytest.mark.parametrize(
    ("rule", "step"),
    [
        ("last_step", 300),
        ("training_domain_validation", 100),
        ("average_validation", 100),
        ("worst_group_validation", 200),
        ("test_domain_oracle", 200),
    ],
)
def test_each_rule_picks_the_expected_step(rule, step):
    assert selection.select_step(ROWS, rule)["step"] == step  # ties (0.80 at 100 and 300) go to the earliest


def test_hyperparameter_selection_compares_mean_validation_over_seeds():
    good = [ROWS, [dict(r, **{"val/accuracy": r["val/accuracy"] - 0.05}) for r in ROWS]]  # mean best 0.775
    better = [[dict(r, **{"val/accuracy": 0.79}) for r in ROWS]] * 2  # mean best 0.79
    chosen = selection.select_hyperparameters({"a": good, "b": better}, "training_domain_validation")
    assert chosen.key == "b" and chosen.validation_score == pytest.approx(0.79) and chosen.candidates == 2
    assert [row["step"] for row in chosen.rows] == [0, 0]
    with pytest.raises(ValueError, match="last_step"):
        selection.select_hyperparameters({"a": good, "b": better}, "last_step")


def test_errors_and_helpers():
    with pytest.raises(ValueError, match="unknown selection rule"):
        selection.select_step(ROWS, "best")
    with pytest.raises(ValueError, match="val/accuracy"):
        selection.select_step([{"step": 0, "test/accuracy": 0.5}], "training_domain_validation")
    assert selection.RULES["test_domain_oracle"].uses_test and not selection.RULES["last_step"].uses_test
    assert selection.mean_std([1.0, 3.0, math.nan]) == (2.0, 1.0)
    assert difference_in_std(22.9, TABLE1["erm"]["test"]) == pytest.approx(-1.0)
    assert difference_in_std(50.0, TABLE1["random"]["test"]) is None


def test_candidate_rows_drop_the_untrained_network_and_a_staged_methods_first_stage():
    from gradstarve.experiments.selection import candidate_rows

    plain = [{"step": 0}, {"step": 5}, {"step": 10}]
    assert [r["step"] for r in candidate_rows(plain)] == [5, 10]
    staged = [
        {"step": 0},
        {"step": 5, "train/stage": 1.0},
        {"step": 10, "train/stage": 1.5},
        {"step": 15, "train/stage": 2.0},
    ]
    assert [r["step"] for r in candidate_rows(staged)] == [15]  # 1.5: the switch fell inside that interval

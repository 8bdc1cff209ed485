"""Fig. 5 and Table 4: the numerical Legendre checks against numpy closed forms, and the reproduction's files."""

from __future__ import annotations

import numpy as np
import pytest

from gradstarve.experiments.reproduce.legendre import (
    numerical_dual_maximum,
    numerical_legendre_transform,
    reproduce,
    run_legendre,
)


@pytest.mark.parametrize("omega", [-5.0, -1.0, 0.0, 0.7, 4.0])
def test_numerical_dual_maximum_recovers_each_primal(omega):
    # independent closed forms, written with numpy only
    assert numerical_dual_maximum("cross_entropy", omega) == pytest.approx(np.log1p(np.exp(-omega)), abs=1e-9)
    assert numerical_dual_maximum("hinge", omega) == pytest.approx(max(0.0, 1.0 - omega), abs=1e-9)
    assert numerical_dual_maximum("squared", omega) == pytest.approx((1.0 - omega) ** 2 / 2, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.5, 0.9])
def test_legendre_transform_of_cross_entropy_is_the_binary_entropy(alpha):
    entropy = -alpha * np.log(alpha) - (1 - alpha) * np.log(1 - alpha)  # Eq. 36
    assert numerical_legendre_transform(lambda w: np.log1p(np.exp(-w)), alpha) == pytest.approx(entropy, abs=1e-9)


def test_table4_holds_for_the_corrected_pairs_and_not_for_the_printed_squared_error():
    rows = {row["loss"]: row for row in run_legendre().rows}
    for loss in ("cross entropy", "hinge", "squared"):
        assert rows[loss]["holds"], rows[loss]
        assert rows[loss]["max |max_α dual - primal|"] < 1e-8
    printed = rows["squared, as printed"]
    assert not printed["holds"]
    assert printed["max |max_α dual - primal|"] == pytest.approx(49 / 2, rel=1e-9)  # (1 - ω)²/2 at ω = -6


def test_reproduction_writes_fig5_and_table4(tmp_path):
    result = reproduce(tmp_path)
    assert (tmp_path / "fig5.png").stat().st_size > 10_000
    assert (tmp_path / "table4.csv").read_text().count("\n") == 5  # header + 4 rows
    assert any("Erratum" in note for note in result.notes)

"""The Fig. 6 and Thm. 2 recipes and the ``gradstarve theory`` commands, end to end on small settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gradstarve.cli import app
from gradstarve.experiments.reproduce.fig6 import Fig6Setup, write_fig6
from gradstarve.experiments.reproduce.starvation import StarvationSetup, run_starvation, write_starvation

runner = CliRunner()


def test_fig6_recipe_writes_figure_and_table_whose_paths_agree(tmp_path):
    setup = Fig6Setup(s1_values=(2.0, 5.0), n_steps=4000)
    result = write_fig6(tmp_path, setup)
    names = sorted(path.name for path in result.files)
    assert names == ["fig6.csv", "fig6.json", "fig6.pdf", "fig6.png"]
    assert all(path.stat().st_size > 0 for path in result.files)
    rows = json.loads((tmp_path / "fig6.json").read_text())
    assert len(rows) == 2 * 2 * 4  # penalties x s1 values x paths
    for row in rows:
        if row["path"] in ("dual", "ode"):
            assert row["max_abs_diff"] < 1e-8  # both dual paths converge to the fixed point
    wd = {row["s1"]: row for row in rows if row["penalty"] == "weight_decay" and row["path"] == "ode"}
    assert wd[5.0]["z2"] < wd[2.0]["z2"]  # starvation
    sd = {row["s1"]: row for row in rows if row["penalty"] == "spectral_decoupling" and row["path"] == "ode"}
    assert sd[5.0]["z2"] == pytest.approx(sd[2.0]["z2"], rel=1e-12)  # decoupling


def test_starvation_recipe_rows_and_sign(tmp_path):
    result = write_starvation(tmp_path, StarvationSetup(points=9))
    assert len(result.rows) == 9
    assert {path.suffix for path in result.files} == {".png", ".pdf", ".csv", ".json"}
    dz2 = np.array([row["dz2_ds1sq_wd"] for row in result.rows[1:]])
    assert np.all(dz2 < 0)
    assert all(row["dz2_ds1sq_sd"] == 0 for row in result.rows)


def test_starvation_recipe_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="s1_max"):
        run_starvation(StarvationSetup(s2=3.0, s1_max=2.0))


def test_cli_theory_fig6_prints_every_path_and_writes_files(tmp_path):
    result = runner.invoke(app, ["theory", "fig6", "--out", str(tmp_path), "--s1", "2,4", "--steps", "3000"])
    assert result.exit_code == 0, result.output
    for text in (
        "exact fixed point",
        "primal GD",
        "dual ascent",
        "dual ODE",
        "closed form (Eq. 20)",
        "Lemma 1",
    ):
        assert text in result.output
    assert (tmp_path / "fig6.png").exists() and (tmp_path / "fig6.pdf").exists()


def test_cli_theory_starvation_and_fixed_point(tmp_path):
    result = runner.invoke(app, ["theory", "starvation", "--out", str(tmp_path), "--points", "5"])
    assert result.exit_code == 0, result.output
    assert "holds" in result.output
    result = runner.invoke(app, ["theory", "fixed-point", "--s", "3,2", "--lam", "0.1", "--delta", "0.2"])
    assert result.exit_code == 0, result.output
    assert "Lemma 1" in result.output and "attractive): True" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["theory", "fig6", "--s1", "2,x"], "comma-separated"),
        (["theory", "fig6", "--lam-wd", "-1", "--s1", "2"], "lam"),
        (["theory", "fixed-point", "--lam", "0"], "lam"),
        (["theory", "fixed-point", "--s", "1,2,3", "--delta", "0.1"], "exactly two"),
        (["theory", "fixed-point", "--penalty", "dropout"], "penalty"),
    ],
)
def test_cli_bad_input_is_a_clear_usage_error(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_help_explains_every_command():
    for args in (
        ["--help"],
        ["theory", "--help"],
        ["theory", "fig6", "--help"],
        ["theory", "starvation", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "Usage" in result.output

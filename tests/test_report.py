"""The reproduction report (markdown + self-contained HTML), the recipe registry and the parts of the existing
recipes, and `gradstarve reproduce` on a machine without data."""

from __future__ import annotations

import base64
import re
import sys
import types

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from typer.testing import CliRunner

from gradstarve.cli import app
from gradstarve.data.errors import MissingDataError
from gradstarve.experiments import report, sweep
from gradstarve.experiments.reproduce import fig6 as fig6_part
from gradstarve.experiments.reproduce import registry
from gradstarve.experiments.reproduce import starvation as starvation_part
from gradstarve.experiments.reproduce import two_moons as two_moons_part
from gradstarve.experiments.reproduce.base import DataMissingError, Reproduction
from gradstarve.experiments.reproduce.two_moons import MoonsReproduction
from sweep_helpers import hand_written_sweep


def _png(path) -> bytes:
    figure = Figure(figsize=(2, 1.5))
    figure.subplots().plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path.read_bytes()


def _external_references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)([^"]*)"', html) + re.findall(r"url\(", html)


def test_report_holds_every_table_figure_skip_and_version(tmp_path):
    png = _png(tmp_path / "part" / "figure.png")
    table = pd.DataFrame(
        {"algorithm": ["erm", "sd"], "test": ["24.0 ± 0.5", "69.0 ± 1.0"], "test (paper)": ["23.7 ± 0.8", "68.4 ± 1.2"]}
    )
    table["Δ/σ"] = [0.375, 0.5]
    part = Reproduction(
        "part", "Table 9: a part", {"accuracy": table}, [tmp_path / "part" / "figure.png"], ["a caveat"], 12.5
    )
    skipped = [
        report.Skipped("celeba", "Table 2: CelebA", "data missing", "CelebA not found; see gradstarve data prepare"),
        report.Skipped("broken", "Fig. 0", "failed", "RuntimeError: boom", 1.0),
    ]
    md_path, html_path = report.write_report(tmp_path, [part], skipped, command="gradstarve reproduce", seconds=20.0)

    md = md_path.read_text()
    assert "| part | Table 9: a part | ran | 12.5 s |" in md
    assert "| celeba | Table 2: CelebA | skipped (data missing) | 0.0 s |" in md
    assert "| erm | 24.0 ± 0.5 | 23.7 ± 0.8 | 0.375 |" in md
    assert "![figure](part/figure.png)" in md and "- a caveat" in md
    assert "CelebA not found; see gradstarve data prepare" in md and "RuntimeError: boom" in md
    versions = report.software_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    for name in ("python", "platform", "numpy", "gradstarve"):
        assert f"| {name} | {versions[name]} |" in md

    html = html_path.read_text()
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(data) == png  # the figure itself is inside the file
    assert _external_references(html) == []  # self-contained: nothing to fetch
    assert "<td>23.7 ± 0.8</td>" in html and "<td>0.375</td>" in html and "a caveat" in html
    assert html.count("<table>") == 3  # summary, the part's table, software


def _fake_recipes() -> types.ModuleType:
    module = types.ModuleType("gradstarve.experiments.reproduce.fake_recipes")
    calls = {}

    def good(out_dir, *, quick=False, data_root=None, progress=None):
        calls["good"] = (out_dir, quick)
        return Reproduction("good", "a good part", {"t": pd.DataFrame({"x": [1.0]})})

    def no_data(out_dir, *, quick=False, data_root=None, progress=None):
        raise DataMissingError(f"MNIST not found under {data_root}: run gradstarve data download mnist")

    def no_files(out_dir, **options):
        raise MissingDataError("train-images-idx3-ubyte.gz is missing")

    def broken(out_dir, **options):
        calls["broken"] = options
        raise RuntimeError("boom")

    def wrong(out_dir, **options):
        return 42

    for function in (good, no_data, no_files, broken, wrong):
        setattr(module, function.__name__, function)
    module.calls = calls
    return module


def test_registry_runs_what_is_there_and_says_why_the_rest_is_skipped(tmp_path, monkeypatch):
    module = _fake_recipes()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    fakes = [
        registry.Recipe(name, name, "fake_recipes", function=name.replace("-", "_"))
        for name in ("good", "no-data", "no-files", "broken", "wrong")
    ]
    recipes = (
        *fakes,
        registry.Recipe("absent", "a recipe not written yet", "no_such_recipe"),
        registry.Recipe("renamed", "a recipe without the function", "fake_recipes", function="nothing"),
        registry.get_recipe("starvation"),
    )
    monkeypatch.setattr(registry, "RECIPES", {recipe.name: recipe for recipe in recipes})
    events = []
    result = registry.reproduce_all(
        tmp_path, quick=True, data_root=tmp_path / "data", on_event=lambda kind, recipe, _: events.append(kind)
    )
    assert [r.name for r in result.reproductions] == ["good", "starvation"]
    kinds = {s.name: s.kind for s in result.skipped}
    assert kinds == {
        "no-data": "data missing",
        "no-files": "data missing",
        "broken": "failed",
        "wrong": "failed",
        "absent": "not available",
        "renamed": "not available",
    }
    reasons = {s.name: s.reason for s in result.skipped}
    assert str(tmp_path / "data") in reasons["no-data"] and "RuntimeError: boom" in reasons["broken"]
    assert "returned int" in reasons["wrong"] and "no_such_recipe" in reasons["absent"]
    assert module.calls["good"] == (tmp_path / "good", True)
    assert module.calls["broken"] == {"quick": True, "data_root": tmp_path / "data", "progress": None}  # one protocol
    assert [s.name for s in result.failed] == ["broken", "wrong"]
    assert events == ["started", "finished"] * len(recipes)
    assert result.reproductions[1].seconds > 0 and (tmp_path / "starvation" / "starvation.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "## Thm. 2" in md and "![starvation](starvation/starvation.png)" in md and "no_such_recipe" in md
    with pytest.raises(ValueError, match="unknown reproduction"):
        registry.reproduce_all(tmp_path, only=["fig7"])


def test_the_theory_and_two_moons_parts_are_reproductions(tmp_path):
    fig6 = fig6_part.reproduce(tmp_path / "fig6")
    table = fig6.tables["final responses against the exact fixed point"]
    assert len(table) == 10 and (table["max |z - z*| primal"] < 1e-6).all()
    wd = table[table["penalty"] == "weight decay"]["z2* (exact)"].to_numpy()
    assert (wd[1:] < wd[:-1]).all()  # starvation: z2* falls as s1 grows
    assert [p.name for p in fig6.figures] == ["fig6.png"]
    assert fig6.evidence.startswith("checks hold")  # the paths end at the fixed point; the approximation is apart

    theorem = starvation_part.reproduce(tmp_path / "starvation")
    assert any(note.endswith(": holds") for note in theorem.notes)
    assert theorem.evidence.startswith("checks hold")
    curve = theorem.tables["fixed-point responses along s1"]
    assert (curve["dz2*/ds1² weight decay"].iloc[1:] < 0).all()
    assert (curve["dz2*/ds1² spectral decoupling"].abs() < 1e-9).all()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this tiny problem runs fastest on one thread, whatever else the machine is doing
    try:
        moons = two_moons_part.reproduce(
            tmp_path / "moons", config=MoonsReproduction(seeds=(0,), figures=(2,), quick=True)
        )
    finally:
        torch.set_num_threads(threads)
    frame = moons.tables["margins and feature responses per setting"]
    assert list(frame["setting"]) == ["(a) Δ < 0", "(b) Δ > 0", "(c) Δ > 0, SD"]
    assert [p.name for p in moons.figures] == ["fig2.png"]
    assert any("tenth of the steps" in note for note in moons.notes)
    assert moons.evidence.startswith("smoke test")  # quick settings are never evidence


def test_report_on_the_outputs_of_a_tiny_sweep(tmp_path):
    def rows_of(run):
        test = 0.6 + 0.1 * run.config.seed
        return [
            {"step": 0, "train/accuracy": 0.5, "val/accuracy": 0.5, "test/accuracy": 0.5},
            {"step": 50, "train/accuracy": 0.9, "val/accuracy": 0.8, "test/accuracy": test},
        ]

    hand_written_sweep(tmp_path / "sweep", sweep.SweepSpec(("synthetic",), ("erm", "sd"), (0, 1)), rows_of)
    results = sweep.collect(tmp_path / "sweep", rules=["last_step", "training_domain_validation"])
    md_path, html_path = report.write_report(tmp_path / "report", [results.as_reproduction()])
    md = md_path.read_text()
    assert "## Sweep results" in md
    assert md.count("| synthetic | erm | default | 2 | 90.0 ± 0.0 | 80.0 ± 0.0 | 65.0 ± 5.0 |") == 2
    assert "### last_step: last evaluation step" in md and "### training_domain_validation:" in md
    assert html_path.read_text().count("<td>65.0 ± 5.0</td>") == 4


def test_reproduce_command_without_data_skips_the_data_sets_cleanly(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["reproduce", "--only", "starvation,colored-mnist,celeba", "--out", str(out), "--data-root", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "done starvation" in result.output and result.output.count("skipped") >= 2
    md = (out / "report.md").read_text()
    assert "| starvation |" in md and "| colored-mnist |" in md and "| celeba |" in md
    assert (out / "report.html").exists() and (out / "starvation" / "starvation.png").exists()
    bad = CliRunner().invoke(app, ["reproduce", "--only", "fig7"])
    assert bad.exit_code != 0 and "fig7" in bad.output

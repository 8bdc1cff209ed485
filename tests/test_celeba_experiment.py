"""Table 2 recipe (CelebA): end-to-end runs of every method on a generated fake CelebA root, the table's format
(paper columns, std units, Clopper-Pearson interval) and model selection by both rules on hand-made metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gradstarve.cli import app
from gradstarve.data.celeba import CELEBA_ATTRIBUTES, CelebAFileNotFoundError, CelebAFormatError, index_celeba
from gradstarve.data.errors import CorruptDataError, DataError, MissingDataError
from gradstarve.experiments import selection, sweep
from gradstarve.experiments.reproduce.base import DataMissingError
from gradstarve.experiments.reproduce.celeba import (
    CPU_COMMON,
    GROUP_NAMES,
    METHODS,
    SEARCHED_METHODS,
    CelebASetup,
    group_rows,
    search_spec,
    seed_results,
    table2_markdown,
    table2_rows,
    write_celeba,
)
from gradstarve.experiments.reproduce.paper_numbers import TABLE2
from gradstarve.experiments.tasks import load_task
from gradstarve.metrics import binomial_interval

# Images per (split, blond, male) in the fake root: every group in every split.
FAKE_COUNTS = {
    0: {(0, 0): 8, (0, 1): 8, (1, 0): 6, (1, 1): 2},
    1: {(0, 0): 3, (0, 1): 3, (1, 0): 2, (1, 1): 2},
    2: {(0, 0): 3, (0, 1): 3, (1, 0): 2, (1, 1): 2},
}
BLOND, MALE = CELEBA_ATTRIBUTES.index("Blond_Hair"), CELEBA_ATTRIBUTES.index("Male")


def make_fake_celeba(root: Path) -> Path:
    """A metadata.csv root of 178 x 218 JPEGs: blond images are yellowish, dark ones brown, with pixel noise."""
    rng = np.random.default_rng(0)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = ["image_id,split," + ",".join(CELEBA_ATTRIBUTES)]
    i = 0
    for split, counts in FAKE_COUNTS.items():
        for (blond, male), count in counts.items():
            for _ in range(count):
                i += 1
                name = f"{i:06d}.jpg"
                base = np.array([220, 190, 90] if blond else [90, 60, 40]) + (30 if male else 0)
                pixels = np.clip(base + rng.normal(0, 25, size=(218, 178, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / name, quality=90)
                values = [-1] * len(CELEBA_ATTRIBUTES)
                values[BLOND], values[MALE] = 2 * blond - 1, 2 * male - 1
                lines.append(f"{name},{split}," + ",".join(map(str, values)))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads make these tiny steps 5-10x
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return make_fake_celeba(tmp_path_factory.mktemp("celeba"))


def tiny_setup(cache_dir: Path, methods=METHODS, **fields) -> CelebASetup:
    """Every method at 32 x 32, batch 12 (2 steps per epoch), 2 epochs (JTT: 1 + 2), one evaluation per epoch."""
    tiny = {"batch_size": 12, "epochs": 2}
    overrides = {m: dict(tiny) for m in methods}
    if "jtt" in overrides:
        overrides["jtt"].update(epochs=3, jtt_first_stage_epochs=1)
    return CelebASetup(
        methods=tuple(methods), seeds=(0,), resolution=32, hparams=overrides, cache_dir=str(cache_dir), **fields
    )


# --------------------------------------------------------------------------------------------------------------
# End to end on the fake root
# --------------------------------------------------------------------------------------------------------------
def test_search_then_final_seeds_end_to_end_and_the_tables_match_the_runs(fake_root, tmp_path):
    setup = tiny_setup(tmp_path / "cache", n_search=1)
    lines: list[str] = []
    reproduction = write_celeba(tmp_path / "out", setup, data_root=fake_root, report=lines.append)

    assert reproduction.name == "celeba" and len(lines) == len(METHODS)  # one final run per method
    search = (tmp_path / "out" / "search.md").read_text()
    assert search.count("**chosen**") == len(SEARCHED_METHODS)  # one chosen setting per searched method
    draws = [run for run in sweep.plan(search_spec(setup, 24)) if run.hparams_index == 1]  # a draw equal to the
    assert search.count("| draw 1 |") == len(draws) >= 4 and "sd_lam" in search  # default is the same run
    assert (tmp_path / "out" / "search" / "spec.json").exists() and (tmp_path / "out" / "final" / "spec.json").exists()
    table = reproduction.data["table2"]
    assert len(table) == 2 * len(METHODS)  # both selection rules for every method
    assert set(table["selection"]) == {"worst_group_validation", "average_validation"}
    shown = reproduction.tables["Table 2 (ours beside the paper)"]
    paper = dict(zip(shown["method"], shown["worst-group % (paper)"], strict=True))
    assert len(shown) == len(table) and paper["ERM"] == "40.35 ± 1.68" and paper["JTT"] == "n/a"  # JTT: not in Table 2
    seeds = reproduction.data["seeds"]
    test_counts = {GROUP_NAMES[2 * b + m]: c for (b, m), c in FAKE_COUNTS[2].items()}
    for row in seeds.to_dict("records"):
        for name, count in test_counts.items():
            assert row[f"n {name}"] == count
        # the worst group's k / n is the reported accuracy, and its exact interval contains it
        assert row["worst_group_correct"] / row["worst_group_count"] == pytest.approx(row["test_worst_group"] / 100)
        assert row["worst_group_ci_low"] <= row["test_worst_group"] <= row["worst_group_ci_high"]
        assert row["test_worst_group"] == pytest.approx(min(row[f"test {name}"] for name in GROUP_NAMES))
        assert row["step"] > 0 and row["last_step"] == 2 * (3 if row["method"] == "jtt" else 2)  # 2 steps per epoch
    jtt = seeds[seeds["method"] == "jtt"]
    assert (jtt["epoch"] > 1).all()  # selected from JTT's second stage only (T = 1 epoch)
    hparams = reproduction.data["hparams"].set_index("method")
    sd_gamma, margin_gamma = hparams.loc["sd", "sd_gamma"], hparams.loc["sd_margin", "sd_gamma"]
    assert (
        margin_gamma.startswith("[-") and sd_gamma.strip("[]").split(",")[1] == margin_gamma.strip("[]").split(",")[1]
    )
    assert hparams.loc["sd_eq25", "sd_gamma"] == "0.0"
    verdict = reproduction.data["verdict"]
    assert set(verdict["method"]) == {"sd", "sd_eq25", "sd_margin"} and (verdict["seeds"] == 1).all()
    assert any("minus ERM, worst-group test accuracy" in note for note in reproduction.notes)
    files = {path.name for path in reproduction.files}
    assert {"table2.md", "table2.csv", "table2_groups.csv", "table2_seeds.csv", "table2_groups.png"} <= files
    assert {"search.md", "search.csv", "table2_verdict.csv"} <= files
    markdown = (tmp_path / "out" / "table2.md").read_text()
    assert "40.35 ± 1.68" in markdown and "from scratch" in markdown and "n = 2" in markdown

    # a second call finds every run done and rebuilds the same tables without training
    runs_before = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    again = write_celeba(tmp_path / "out", setup, data_root=fake_root, report=lines.append)
    assert again.data["seeds"].equals(seeds)
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == runs_before
    # report only: reads what exists (seed 1 was never run), names it and never counts it
    partial = write_celeba(
        tmp_path / "partial",
        replace(setup, seeds=(0, 1)),
        runs_dir=tmp_path / "out" / "runs",
        data_root=fake_root,
        report_only=True,
    )
    assert (partial.data["table2"]["seeds"] == 1).all()
    assert any("INCOMPLETE" in note and "ERM seed 1" in note for note in partial.notes)
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == runs_before


def test_missing_celeba_raises_data_missing_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataMissingError, match="CelebA is not available"):
        write_celeba(tmp_path / "out", tiny_setup(tmp_path / "cache", ("erm",)), data_root=tmp_path / "empty")


def test_cli_quick_run_on_the_fake_root(fake_root, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "reproduce",
            "celeba",
            "--data-root",
            str(fake_root),
            "--quick",
            "--methods",
            "sd",
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--threads",
            "1",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "83.24 ± 2.01" in result.output and "QUICK RUN" in result.output
    assert (tmp_path / "out" / "table2.md").exists()
    result = CliRunner().invoke(app, ["reproduce", "celeba", "--data-root", str(tmp_path), "--methods", "erm"])
    assert result.exit_code == 1 and "CelebA is not available" in result.output
    result = CliRunner().invoke(app, ["reproduce", "celeba", "--methods", "erm,irm"])
    assert result.exit_code == 2 and "methods must be a non-empty subset" in result.output


# --------------------------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------------------------
def test_cpu_preset_overrides_the_paper_defaults_without_changing_them():
    setup = CelebASetup()
    sd = setup.config("sd", 0, 16000)
    assert sd.hparams["optimizer"] == "adam" and sd.hparams["lr"] == CPU_COMMON["lr"]
    assert sd.hparams["sd_lam"] == [0.088, 0.012] and sd.hparams["sd_gamma"] == [0.44, 2.5]  # App. A.3, per class
    erm = setup.config("erm", 0, 16000)
    assert "momentum" not in erm.hparams and erm.hparams["pretrained"] is False
    assert erm.eval_every == 125 and erm.eval_splits == ("val", "test")
    assert setup.resolved().n_search == 8 and setup.resolved().seeds == (0, 1, 2, 3, 4)
    assert setup.config("sd_eq25", 0, 16000).hparams["sd_gamma"] == 0.0
    assert setup.config("sd_margin", 0, 16000).hparams["sd_gamma"] == [-0.44, 2.5]
    paper = CelebASetup(preset="paper").config("erm", 0, 16000)
    assert (paper.hparams["optimizer"], paper.hparams["lr"], paper.hparams["model"]) == ("sgd", 1e-5, "resnet50")
    assert paper.hparams["pretrained"] is False and paper.data["resolution"] == 224
    quick = CelebASetup(quick=True).resolved()
    assert quick.seeds == (0,) and quick.train_size == 2000 and quick.data_options()["resolution"] == 32
    assert quick.config("jtt", 0, 2000).hparams["epochs"] == 2 + 2
    assert CelebASetup(quick=True, seeds=(0, 1, 2)).resolved().seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="preset must be one of"):
        CelebASetup(preset="gpu")
    with pytest.raises(ValueError, match="unknown methods"):
        CelebASetup(hparams={"dro": {}})


def test_celeba_task_options_train_size_and_pretrained(fake_root, tmp_path):
    options = {"data_root": fake_root, "resolution": 32, "cache_dir": tmp_path, "train_size": 10, "progress": False}
    task = load_task("celeba", options, seed=3)
    again = load_task("celeba", options, seed=3)
    assert len(task.train) == 10 and task.evaluation["train"] is task.train and len(task.evaluation["test"]) == 10
    assert sum(task.train.metadata["group_counts"].values()) == 10
    assert task.train.metadata["group_counts"]["blond, male"] == int((task.train.group == 3).sum())
    assert (task.train.x == again.train.x).all()  # the subset is a function of the seed
    assert len(load_task("celeba", {**options, "train_size": 1000}, seed=3).train) == 24  # at most: all of them
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="no ImageNet weights were given"):
        task.build_model({"pretrained": True}, generator)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task("celeba", {**options, "pretrained_weights": str(tmp_path / "r.pth")}).build_model(
            {"pretrained": True}, generator
        )


def test_celeba_errors_belong_to_the_data_error_hierarchy(tmp_path):
    assert issubclass(CelebAFileNotFoundError, MissingDataError) and issubclass(CelebAFileNotFoundError, DataError)
    assert issubclass(CelebAFormatError, CorruptDataError) and issubclass(CelebAFormatError, ValueError)
    with pytest.raises(MissingDataError, match="is not a folder"):
        index_celeba(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------------------
# Selection and table format on hand-made metrics
# --------------------------------------------------------------------------------------------------------------
def _row(step: int, val_worst: float, val_avg: float, test_groups: list[float], stage: float | None = None) -> dict:
    counts = [2195, 1892, 509, 44]
    row = {
        "step": step,
        "val/worst_group_accuracy": val_worst,
        "val/accuracy": val_avg,
        "test/group_accuracy": test_groups,
        "test/group_count": counts,
        "test/worst_group_accuracy": min(test_groups),
        "test/accuracy": float(np.dot(test_groups, counts) / sum(counts)),
    }
    if stage is not None:
        row["train/stage"] = stage
    return row


def test_selection_by_worst_group_and_by_average_validation_accuracy():
    rows = [
        _row(0, 0.95, 0.99, [1.0, 1.0, 1.0, 1.0]),  # the untrained network is never selected
        _row(10, 0.50, 0.96, [0.99, 0.99, 0.90, 20 / 44]),
        _row(20, 0.80, 0.93, [0.95, 0.94, 0.92, 35 / 44]),
        _row(30, 0.70, 0.95, [0.97, 0.96, 0.91, 30 / 44]),
    ]
    results = seed_results({("erm", 0): rows}, {"erm": 10})
    by_rule = {r["selection"]: r for r in results}
    assert by_rule["worst_group_validation"]["step"] == 20
    assert by_rule["worst_group_validation"]["test_worst_group"] == pytest.approx(100 * 35 / 44)
    assert by_rule["average_validation"]["step"] == 10 and by_rule["average_validation"]["epoch"] == 1.0
    assert by_rule["average_validation"]["worst_group"] == "blond, male"
    assert by_rule["average_validation"]["worst_group_correct"] == 20
    low, _ = binomial_interval(20, 44)
    assert by_rule["average_validation"]["worst_group_ci_low"] == pytest.approx(100 * low)
    # JTT: only second-stage rows are candidates, even when a first-stage row scores higher
    jtt = [
        _row(0, 0.0, 0.5, [1, 1, 0, 0]),
        _row(10, 0.9, 0.97, [1, 1, 1, 1], 1.0),
        _row(20, 0.6, 0.9, [1, 1, 1, 0.5], 2.0),
    ]
    assert [r["step"] for r in selection.candidate_rows(jtt)] == [20]
    assert {r["step"] for r in seed_results({("jtt", 0): jtt}, {"jtt": 10})} == {20}


def test_table2_rows_put_the_paper_beside_ours_in_std_units_with_a_binomial_interval():
    per_seed = []
    for seed, (worst, average) in enumerate([(20 / 44, 0.95), (24 / 44, 0.93)]):
        groups = [0.99, 0.98, 0.90, worst]
        per_seed += seed_results({("erm", seed): [_row(10, 0.5, average, groups)]}, {"erm": 10})
    table = {row["selection"]: row for row in table2_rows(per_seed)}
    row = table["average_validation"]
    assert row["seeds"] == 2 and row["worst_group_n"] == 44 and row["worst_group"] == "blond, male"
    assert row["worst_group_mean"] == pytest.approx(100 * 22 / 44)
    assert row["worst_group_std"] == pytest.approx(100 * 2 / 44)  # population std of 20/44 and 24/44
    assert (row["paper_worst_group"], row["paper_worst_group_std"]) == TABLE2["erm"]["worst_group"]
    assert row["worst_group_diff_in_paper_std"] == pytest.approx((50.0 - 40.35) / 1.68)
    assert row["average_diff_in_paper_std"] == pytest.approx((row["average_mean"] - 94.61) / 0.67)
    # the exact 95% interval for 22/44 is [34.6, 65.4]: about ±15 points, ~9 times the paper's std
    assert (row["worst_group_ci_low"], row["worst_group_ci_high"]) == pytest.approx((34.6, 65.4), abs=0.1)
    markdown = table2_markdown(list(table.values()))
    assert (
        "| ERM | average_validation | 2 | 50.00 ± 4.55 | [34.6, 65.4] (n = 44, blond, male) | 40.35 ± 1.68 | +5.7 |"
        in (markdown)
    )
    groups = group_rows(per_seed)
    blond_male = next(g for g in groups if g["group"] == "blond, male" and g["selection"] == "average_validation")
    assert blond_male["n_test"] == 44 and blond_male["test_mean"] == pytest.approx(50.0)
    # JTT has no paper number: the paper columns stay empty
    jtt = table2_rows(seed_results({("jtt", 0): [_row(10, 0.5, 0.9, [1, 1, 1, 0.5], 2.0)]}, {"jtt": 10}))
    assert jtt[0]["paper_worst_group"] is None and jtt[0]["worst_group_diff_in_paper_std"] is None


def test_channels_last_is_a_task_option_with_the_same_function(fake_root, tmp_path):
    options = {**tiny_setup(tmp_path / "cache").data_options(), "data_root": str(fake_root)}
    plain = load_task("celeba", options)
    fast = load_task("celeba", {**options, "channels_last": True})
    model = fast.build_model({"pretrained": False}, torch.Generator().manual_seed(0)).eval()
    reference = plain.build_model({"pretrained": False}, torch.Generator().manual_seed(0)).eval()
    x = plain.train.x[:4]
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    batch = fast.augment(x, torch.Generator().manual_seed(1))
    assert batch.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------------------------
# The feature analysis of Table 2's networks (reproduce celeba-features)
# --------------------------------------------------------------------------------------------------------------
def test_celeba_features_part_matches_a_hand_computed_svd_of_the_tangent_features(fake_root, tmp_path):
    from gradstarve.experiments.analyse import load_run_networks
    from gradstarve.experiments.reproduce.celeba_features import (
        FeaturesSetup,
        response_weighted_alignment,
        run_features,
    )
    from gradstarve.ntk import ntrf

    celeba = tiny_setup(tmp_path / "cache", methods=("erm", "sd"), n_search=0)
    setup = FeaturesSetup(n=100, k=3, celeba=celeba)  # n above the 10 validation images: all of them
    reproduction = run_features(tmp_path / "out", setup, data_root=fake_root)
    features = reproduction.tables["features"]
    assert list(features["feature"]) == [1, 2, 3]

    # Independent: the SVD of Y Φ₀ from the plain per-example Jacobian of the initial network, float64.
    task = load_task("celeba", {**celeba.resolved().data_options(), "data_root": fake_root}, seed=0)
    run_dir = next((tmp_path / "out" / "runs").glob("celeba-erm-*"))
    _, _, initial, trained = load_run_networks(run_dir, task=task)
    val = task.evaluation["val"]
    signs = (2 * val.y - 1).double()
    phi = ntrf(initial.double(), val.x.double())
    u, s, _ = torch.linalg.svd(signs[:, None] * phi, full_matrices=False)
    np.testing.assert_allclose(features["strength_share"], (s[:3] ** 2 / (s[:3] ** 2).sum()).numpy(), rtol=1e-3)

    # The ERM network's response shares: z = U^T (Y ŷ) with the same U (up to sign), shares of the top 3.
    with torch.no_grad():
        margins = signs * trained.double()(val.x.double()).reshape(-1)
    z = u[:, :3].T @ margins
    np.testing.assert_allclose(features["response_share (ERM)"], (z**2 / (z**2).sum()).numpy(), rtol=1e-3, atol=1e-6)

    weighted = reproduction.tables["response-weighted alignment"].set_index("network")
    shares, alignment = features["response_share (ERM)"], features["alignment_Male"]
    assert weighted.loc["ERM", "Male"] == pytest.approx(float((shares * alignment.abs()).sum()))
    assert response_weighted_alignment(
        pd.DataFrame({"response_share": [0.5, 0.5], "a": [1.0, -0.2]}), "a"
    ) == pytest.approx(0.6)
    assert (tmp_path / "out" / "features.png").exists() and (tmp_path / "out" / "sd" / "starvation.md").exists()
    assert "SD" in reproduction.notes[0] and "alignment" in reproduction.notes[0]

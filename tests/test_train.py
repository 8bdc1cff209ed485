"""The training loop: run folders, metrics, checkpoints, resuming, skipping finished runs, JTT's stages."""

from __future__ import annotations

import json

import pytest
import torch

from gradstarve.experiments.tasks import load_task
from gradstarve.experiments.train import RunConfig, make_config, nonfinite_metrics, read_metrics, train


def config(algorithm: str = "erm", **overrides) -> RunConfig:
    fields = {
        key: overrides.pop(key)
        for key in ("seed", "eval_every", "data", "eval_splits", "precision")
        if key in overrides
    }
    return make_config("synthetic", algorithm, overrides={"steps": 12, **overrides}, eval_every=4, **fields)


def test_run_folder_layout_and_metrics(tmp_path):
    result = train(config(), tmp_path)
    assert result.run_dir.name.startswith("synthetic-erm-s0-")
    assert {p.name for p in result.run_dir.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "done"}
    rows = read_metrics(result.run_dir)
    assert [row["step"] for row in rows] == [0, 4, 8, 12]
    last = rows[-1]
    for split, n in (("train", 400), ("val", 100), ("test", 200)):  # the synthetic task's split sizes
        counts, accuracies = last[f"{split}/group_count"], last[f"{split}/group_accuracy"]
        assert sum(counts) == n
        assert last[f"{split}/worst_group_accuracy"] == min(a for a in accuracies if a is not None)
        present = [(a, c) for a, c in zip(accuracies, counts, strict=True) if c]
        assert last[f"{split}/accuracy"] == pytest.approx(sum(a * c for a, c in present) / n, abs=1e-12)
    assert last["train/loss"] > 0 and "train/nll" in last
    assert rows[-1]["train/accuracy"] > rows[0]["train/accuracy"]  # it learns
    assert json.loads((result.run_dir / "done").read_text())["steps"] == 12


def test_finished_runs_are_skipped_and_hashes_are_stable(tmp_path):
    first = train(config(), tmp_path)
    again = train(config(), tmp_path)
    assert again.skipped and again.run_dir == first.run_dir
    assert config().run_id() == config().run_id()
    assert config(seed=1).run_id() != config().run_id()
    assert config(lr=0.02).run_id() != config().run_id()
    with_location = make_config("synthetic", "erm", data={"data_root": "/somewhere"})
    assert with_location.run_id() == make_config("synthetic", "erm").run_id()  # where data lives is not identity


def test_resume_after_interruption_gives_identical_metrics_without_duplicates(tmp_path):
    reference = read_metrics(train(config("irm", irm_anneal_steps=5), tmp_path / "a").run_dir)
    run = config("irm", irm_anneal_steps=5)
    partial = train(run, tmp_path / "b", max_steps=6)  # stops at step 6, last checkpoint at step 4
    assert not (partial.run_dir / "done").exists()
    with (partial.run_dir / "metrics.jsonl").open("a") as handle:  # a line written after the last checkpoint
        handle.write(json.dumps({"step": 99, "train/accuracy": 0.0}) + "\n")
        handle.write('{"step": 100, "torn')  # and a torn line, as from a SIGKILL mid-write
    resumed = read_metrics(train(run, tmp_path / "b").run_dir)
    assert [row["step"] for row in resumed] == [0, 4, 8, 12]
    for a, b in zip(reference, resumed, strict=True):
        for key in a:
            if key not in ("seconds",):
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_different_config_in_the_same_folder_is_refused(tmp_path):
    run = config()
    folder = tmp_path / run.folder_name()
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="different run"):
        train(run, tmp_path)


def test_jtt_switches_stage_after_its_first_epochs(tmp_path):
    run = make_config("synthetic", "jtt", overrides={"steps": 8, "jtt_first_stage_epochs": 3}, eval_every=4)
    rows = read_metrics(train(run, tmp_path).run_dir)
    # steps 1-3 are stage 1 (T = 3 full-batch epochs), steps 4-8 stage 2; each row logs the mean since the last
    assert [row.get("train/stage") for row in rows] == [None, 1.25, 2.0]


@pytest.mark.filterwarnings("ignore::gradstarve.experiments.train.ScheduleNeverSwitchesWarning")
@pytest.mark.parametrize("algorithm", ["erm", "sd", "irm", "vrex", "group_dro", "lff", "jtt"])
def test_every_algorithm_trains_on_the_synthetic_task(tmp_path, algorithm):
    rows = read_metrics(
        train(make_config("synthetic", algorithm, overrides={"steps": 10}, eval_every=5), tmp_path).run_dir
    )
    assert rows[-1]["step"] == 10
    assert nonfinite_metrics(rows) == []  # every loss and accuracy finite
    assert rows[-1]["train/loss"] < rows[1]["train/loss"]  # the objective went down


def test_minibatches_and_bfloat16(tmp_path):
    run = config(batch_size=64, precision="bfloat16")
    rows = read_metrics(train(run, tmp_path).run_dir)
    assert rows[-1]["step"] == 12 and rows[-1]["train/accuracy"] > 0.5


def test_unknown_hyperparameter_and_bad_fields():
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        make_config("synthetic", "erm", overrides={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown dataset"):
        load_task("imagenet")
    with pytest.raises(ValueError, match="precision"):
        train(config(precision="fp8"), "/tmp/unused")


def test_feature_tracker_hooks_into_the_trainer(tmp_path):
    """Issue 4's tracker as a trainer callback: z(t) recorded at the chosen steps, U fixed at initialisation."""
    from gradstarve.analysis import FeatureTracker

    run = config()
    task = load_task("synthetic", {}, run.seed)
    initial = task.build_model(run.hparams, torch.Generator().manual_seed(run.seed))
    tracker = FeatureTracker(initial, task.train.x, task.train.signed_labels(), k=3, steps=[0, 4, 8, 12])
    tracker(0)
    train(run, tmp_path, task=task, callbacks=[tracker.callback])
    history = tracker.history
    assert history["step"].tolist() == [0, 4, 8, 12]
    assert history["z1"].abs().iloc[-1] != pytest.approx(history["z1"].abs().iloc[0])  # the responses moved

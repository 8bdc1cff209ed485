"""Run folders are untrusted input: no code runs from them, damaged files are named and never resumed or counted,
and a Colored MNIST run resumed in a fresh model computes bitwise what the uninterrupted run computed."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from gradstarve.data.base import LabelledData
from gradstarve.experiments import sweep
from gradstarve.experiments.tasks import Task
from gradstarve.experiments.train import (
    DamagedRunError,
    RunRestartedWarning,
    inspect_run,
    load_checkpoint,
    make_config,
    read_metrics,
    train,
)
from gradstarve.models.channel_sparse_mlp import ChannelSparseMLP
from sweep_helpers import hand_written_sweep


def config(**overrides):
    return make_config("synthetic", "erm", overrides={"steps": 12, **overrides}, eval_every=4)


def rows_without_time(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


class _Payload:
    """Unpickling this object would create ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_in_a_checkpoint_never_runs(tmp_path):
    run = config()
    train(run, tmp_path, max_steps=4)
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / run.folder_name() / "checkpoint.pt"
    torch.save({"algorithm": _Payload(marker), "sampler": {}, "generator": torch.zeros(1), "step": 4}, checkpoint)
    with pytest.raises(DamagedRunError, match="cannot be read as a checkpoint"):
        load_checkpoint(checkpoint)
    with pytest.warns(RunRestartedWarning, match="restarted"):
        result = train(run, tmp_path)
    assert not marker.exists()
    reference = train(run, tmp_path / "reference")
    assert rows_without_time(result.metrics) == rows_without_time(reference.metrics)
    assert result.notes and "checkpoint.pt" in result.notes[0]


def test_flipped_bytes_in_a_checkpoint_are_detected_and_the_run_restarts(tmp_path):
    run = config()
    train(run, tmp_path, max_steps=8)
    checkpoint = tmp_path / run.folder_name() / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    for i in range(len(data) - 200, len(data) - 136):  # 64 bytes inside the tensor data
        data[i] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(DamagedRunError, match="checksum"):
        load_checkpoint(checkpoint)
    with pytest.warns(RunRestartedWarning):
        result = train(run, tmp_path)
    assert rows_without_time(result.metrics) == rows_without_time(train(run, tmp_path / "reference").metrics)
    assert (tmp_path / run.folder_name() / "checkpoint.pt.damaged").exists()  # kept for inspection


@pytest.mark.parametrize("content", [b"", b"garbage", b"GRADSTARVE-CHECKPOINT-1 00\n"])
def test_empty_truncated_or_garbage_checkpoints_name_the_file(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(DamagedRunError, match=str(path)):
        load_checkpoint(path)


def test_a_torn_last_line_is_dropped_but_a_damaged_middle_line_is_an_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = [json.dumps({"step": s, "x": 1.0}) for s in (0, 4, 8)]
    (run_dir / "metrics.jsonl").write_text("\n".join(good) + '\n{"step": 12, "x"')  # killed mid-write
    assert [row["step"] for row in read_metrics(run_dir)] == [0, 4, 8]
    (run_dir / "metrics.jsonl").write_text(good[0] + "\n{torn\n" + good[1] + "\n" + good[2] + "\n")
    with pytest.raises(DamagedRunError, match="line 2"):
        read_metrics(run_dir)
    (run_dir / "metrics.jsonl").write_text(good[1] + "\n" + good[0] + "\n")
    with pytest.raises(DamagedRunError, match="does not follow"):
        read_metrics(run_dir)


def test_a_damaged_metrics_line_restarts_the_run_instead_of_losing_evaluations(tmp_path):
    run = config()
    train(run, tmp_path, max_steps=8)
    metrics = tmp_path / run.folder_name() / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n" + lines[1][:10] + "\n" + lines[2] + "\n")
    with pytest.warns(RunRestartedWarning, match="metrics.jsonl"):
        result = train(run, tmp_path)
    assert [row["step"] for row in result.metrics] == [0, 4, 8, 12]


def test_a_finished_run_whose_metrics_changed_is_damaged(tmp_path):
    run = config()
    run_dir = train(run, tmp_path).run_dir
    assert inspect_run(run_dir, run).state == "done"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")  # the last evaluations lost
    inspection = inspect_run(run_dir, run)
    assert inspection.state == "damaged" and "changed after the run finished" in inspection.problem
    assert inspect_run(tmp_path / "nothing-here").state == "missing"


def _rows(run, test_accuracy):
    return [
        {"step": 0, "train/accuracy": 0.5, "test/accuracy": 0.5},
        {"step": 10, "train/accuracy": 0.9, "test/accuracy": test_accuracy(run)},
    ]


def test_collect_names_damaged_and_diverged_runs_and_counts_only_the_seeds_it_averages(tmp_path):
    spec = sweep.SweepSpec(("synthetic",), ("erm",), (0, 1, 2), n_hparams=1)
    runs = hand_written_sweep(tmp_path, spec, lambda run: _rows(run, lambda r: math.nan if r.config.seed == 2 else 0.8))
    runs = {run.config.seed: run for run in runs if run.hparams_index == 0}  # last_step reports the default setting
    damaged = sweep.runs_root(tmp_path) / runs[1].folder_name / "metrics.jsonl"
    damaged.write_text(damaged.read_text().replace('"step": 10', '"step": 10x'))
    results = sweep.collect(tmp_path, rules=["last_step"])
    (row,) = results.table.to_dict("records")
    assert row["seeds"] == 1
    assert row["test/accuracy mean"] == pytest.approx(80.0)
    notes = " ".join(results.notes)
    assert runs[1].folder_name in notes and "damaged" in notes
    assert runs[2].folder_name in notes and "diverged" in notes


def _colour_task(n: int = 240) -> Task:
    """Colored-MNIST-shaped data (one non-zero channel per example) without MNIST files."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.zeros(n, 2, 14, 14)
    colour = torch.where(torch.rand(n, generator=generator) < 0.85, y, 1 - y)
    x[torch.arange(n), colour] = torch.rand(n, 14, 14, generator=generator) * (1 + y.view(-1, 1, 1))
    group = torch.arange(n) % 2
    data = LabelledData(x, y, group, ("env0", "env1"), "colour")

    def build(hparams, model_generator):
        return ChannelSparseMLP(2, 392, hparams["hidden"], 1, init="xavier", generator=model_generator)

    return Task("colored-mnist", data, {"train": data}, build)


def test_colored_mnist_model_resumes_bitwise(tmp_path):
    run = make_config("colored-mnist", "erm", overrides={"steps": 30, "hidden": [32, 32], "lr": 1e-2}, eval_every=5)
    reference = train(run, tmp_path / "a", task=_colour_task())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no restart: an intact checkpoint resumes
        train(run, tmp_path / "b", task=_colour_task(), max_steps=7)  # "killed" after step 7, checkpoint at 5
        train(run, tmp_path / "b", task=_colour_task(), max_steps=11)  # a new process (new model) resumes
        resumed = train(run, tmp_path / "b", task=_colour_task())
    assert rows_without_time(resumed.metrics) == rows_without_time(reference.metrics)  # exact, not approximate


def test_checkpoints_written_before_checksums_still_resume(tmp_path):
    run = config()
    train(run, tmp_path, max_steps=4)
    checkpoint = tmp_path / run.folder_name() / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    torch.save(state, checkpoint)  # the old format: a plain torch file, no magic, no checksum
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunRestartedWarning)
        resumed = train(run, tmp_path)
    assert rows_without_time(resumed.metrics) == rows_without_time(train(run, tmp_path / "reference").metrics)

"""Sweeps: run hashes, planning, a SIGKILLed launch relaunched, status / clean-up, and selection through collect."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from gradstarve.cli import app
from gradstarve.experiments import execute, sweep
from gradstarve.experiments.train import RunConfig, make_config, read_metrics, train
from sweep_helpers import hand_written_sweep

# --------------------------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------------------------
REFERENCE = RunConfig(
    "synthetic", "erm", {"lr": 0.01, "steps": 20, "hidden": [16]}, seed=3, data={"n": 100}, eval_every=5
)


def test_run_hash_is_stable_and_documented():
    # The value is frozen: a change to the hashing renames every run folder, so it must be deliberate (and come
    # with a TRAINER_VERSION bump). The scheme: SHA-256 of the identity as sorted-key compact JSON, 16 hex digits.
    canonical = (
        '{"algorithm":"erm","data":{"n":100},"dataset":"synthetic","eval_every":5,"eval_splits":null,'
        '"hparams":{"hidden":[16],"lr":0.01,"steps":20},"precision":"float32","seed":3,"trainer_version":1}'
    )
    assert REFERENCE.run_id() == hashlib.sha256(canonical.encode()).hexdigest()[:16] == "849e5a945dcd9e6e"
    assert REFERENCE.folder_name() == "synthetic-erm-s3-849e5a945dcd9e6e"
    reordered = RunConfig("synthetic", "erm", {"hidden": [16], "steps": 20, "lr": 0.01}, 3, {"n": 100}, eval_every=5)
    assert reordered.run_id() == REFERENCE.run_id()  # key order does not matter
    located = RunConfig("synthetic", "erm", REFERENCE.hparams, 3, {"n": 100, "data_root": "/x"}, eval_every=5)
    assert located.run_id() == REFERENCE.run_id()  # where data lives is not part of a run
    # a round trip through the dict form (Ray trials, config.json) keeps the identity
    assert execute.config_from_dict(json.loads(json.dumps(execute.config_to_dict(REFERENCE)))) == REFERENCE
    # every field that changes results changes the hash
    changed = [
        RunConfig("synthetic", "sd", REFERENCE.hparams, 3, {"n": 100}, eval_every=5),
        RunConfig("synthetic", "erm", {**REFERENCE.hparams, "lr": 0.010000001}, 3, {"n": 100}, eval_every=5),
        RunConfig("synthetic", "erm", REFERENCE.hparams, 4, {"n": 100}, eval_every=5),
        RunConfig("synthetic", "erm", REFERENCE.hparams, 3, {"n": 101}, eval_every=5),
        RunConfig("synthetic", "erm", REFERENCE.hparams, 3, {"n": 100}, eval_every=6),
        RunConfig("synthetic", "erm", REFERENCE.hparams, 3, {"n": 100}, eval_every=5, precision="bfloat16"),
    ]
    assert len({c.run_id() for c in changed} | {REFERENCE.run_id()}) == len(changed) + 1


def test_a_small_discrete_space_still_gives_n_hparams_plus_one_distinct_settings():
    def lrs(values, n_hparams):
        search = {"lr": {"choice": values}}
        variants = {"erm_lr": {"algorithm": "erm", "search": search, "overrides": {"weight_decay": 0.0}}}
        spec = sweep.SweepSpec(("synthetic",), ("erm_lr",), (0,), n_hparams=n_hparams, variants=variants)
        runs = sweep.plan(spec)
        return [run.config.hparams["lr"] for run in runs], [run.hparams_index for run in runs]

    values = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07]  # the default lr is 0.01
    found, indices = lrs(values, 6)  # the first 6 draws of this space repeat one value
    assert len(found) == 7 and len(set(found)) == 7  # the default and 6 distinct draws
    assert set(found[1:]) <= set(values) and indices == sorted(indices) and indices[:1] == [0]
    # fewer values than settings asked for: every value once, and planning ends
    found, _ = lrs([0.02, 0.03], 6)
    assert sorted(found) == [0.01, 0.02, 0.03]


def test_identical_configs_are_one_run_and_colliding_hashes_are_refused(tmp_path, monkeypatch):
    # nothing searched (lr and weight decay fixed by overrides): the 3 draws equal the defaults -> one run per seed
    spec = sweep.SweepSpec(("synthetic",), ("erm",), (0, 1), n_hparams=3, overrides={"lr": 0.01, "weight_decay": 0.0})
    runs = sweep.plan(spec)
    assert [(run.config.seed, run.hparams_index) for run in runs] == [(0, 0), (1, 0)]
    # two different configurations under one name must never share a folder
    monkeypatch.setattr(RunConfig, "run_id", lambda self: "0" * 16)
    with pytest.raises(ValueError, match="hash collision"):
        sweep.plan(sweep.SweepSpec(("synthetic",), ("erm",), (0,), n_hparams=1))
    first = make_config("synthetic", "erm", overrides={"steps": 2}, eval_every=1)
    train(first, tmp_path)
    second = make_config("synthetic", "erm", overrides={"steps": 2, "lr": 0.02}, eval_every=1)
    assert second.folder_name() == first.folder_name()
    with pytest.raises(ValueError, match="different run"):
        train(second, tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Planning and specs
# --------------------------------------------------------------------------------------------------------------
def test_plan_crosses_datasets_algorithms_settings_and_seeds():
    spec = sweep.SweepSpec(
        ("synthetic", "two-moons"), ("erm", "sd"), (0, 1, 2), n_hparams=2, steps=7, overrides={"sd_lam": 0.05}
    )
    runs = sweep.plan(spec)
    assert len(runs) == 2 * 2 * 3 * 3
    assert len({run.folder_name for run in runs}) == len(runs)
    assert all(run.config.hparams["steps"] == 7 for run in runs)
    assert {run.config.hparams["sd_lam"] for run in runs if run.config.algorithm == "sd"} == {0.05}
    assert all("sd_lam" not in run.config.hparams for run in runs if run.config.algorithm == "erm")
    by_setting = {}
    for run in runs:  # a setting draws the same hyperparameters for every seed, different ones across settings
        if run.config.dataset == "synthetic" and run.config.algorithm == "erm":
            by_setting.setdefault(run.hparams_index, set()).add(run.config.hparams["lr"])
    assert all(len(lrs) == 1 for lrs in by_setting.values())
    assert len(set().union(*by_setting.values())) == 3
    assert by_setting[0] == {0.01}  # setting 0 is the table's default
    assert sweep.plan(spec) == runs  # deterministic


def test_spec_files_and_bad_specs(tmp_path):
    spec = sweep.SweepSpec(("synthetic",), ("erm", "irm"), (0, 1), n_hparams=2, steps=5, data={"synthetic": {"n": 50}})
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    assert sweep.load_spec(tmp_path / "spec.json") == spec
    (tmp_path / "spec.toml").write_text(
        'datasets = ["synthetic"]\nalgorithms = ["erm", "irm"]\nseeds = [0, 1]\nn_hparams = 2\nsteps = 5\n'
        "[data.synthetic]\nn = 50\n"
    )
    assert sweep.load_spec(tmp_path / "spec.toml") == spec
    sweep.save_spec(tmp_path / "s", spec)
    with pytest.raises(ValueError, match="different sweep"):
        sweep.save_spec(tmp_path / "s", sweep.SweepSpec(("synthetic",), ("erm",)))
    for bad, match in [
        ({"datasets": ["imagenet"], "algorithms": ["erm"]}, "unknown datasets"),
        ({"datasets": ["synthetic"], "algorithms": ["adam"]}, "unknown algorithms"),
        ({"datasets": ["synthetic"], "algorithms": ["erm"], "seeds": [0, 0]}, "duplicates"),
        ({"datasets": ["synthetic"], "algorithms": ["erm"], "n_hparams": -1}, "n_hparams"),
        ({"datasets": ["synthetic"], "algorithms": ["erm"], "overrides": {"learning_rate": 1}}, "unknown hyper"),
        ({"datasets": ["synthetic"], "algorithms": ["erm"], "data": {"celeba": {}}}, "not in the sweep"),
        ({"datasets": ["synthetic"], "algorithms": ["erm"], "workers": 3}, "unknown sweep spec fields"),
    ]:
        with pytest.raises(ValueError, match=match):
            sweep.SweepSpec.from_dict(bad)
    with pytest.raises(ValueError, match="not a sweep folder"):
        sweep.open_spec(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------------------
# Killed and relaunched
# --------------------------------------------------------------------------------------------------------------
STEPS, EVERY = 3000, 100  # a run takes seconds: the kill lands mid-run


def test_sigkilled_sweep_relaunched_has_every_run_once_and_no_duplicated_lines(tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "gradstarve.cli", "sweep", "launch", str(sweep_dir), "--datasets", "synthetic"]
    command += ["--algorithms", "erm,sd", "--seeds", "0,1", "--steps", str(STEPS), "--eval-every", str(EVERY)]
    command += ["--workers", "2", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = sweep_dir / "runs"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            files = list(runs_dir.glob("*/metrics.jsonl")) if runs_dir.exists() else []
            if any(len(read_metrics(f.parent)) >= 3 for f in files):
                break
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the launch finished before it could be killed mid-way"
    deadline = time.monotonic() + 10
    while any(s.state == "running" for s in sweep.sweep_status(sweep_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    statuses = sweep.sweep_status(sweep_dir)
    assert not any(s.state == "running" for s in statuses)  # its workers died with it: no run is locked
    assert len(statuses) == 4
    assert sum(s.state == "done" for s in statuses) < 4
    states = [(s.state, s.step) for s in statuses]
    assert any(s.state == "partial" and s.step >= EVERY for s in statuses), states  # killed mid-run
    assert not any(s.state == "failed" for s in statuses), states  # interrupted is not failed

    result = CliRunner().invoke(app, ["sweep", "launch", str(sweep_dir), "--workers", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    assert len(folders) == 4 and all((f / "done").exists() for f in folders)
    expected_steps = list(range(0, STEPS + 1, EVERY))
    for folder in folders:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == expected_steps, folder.name
    assert [s.state for s in sweep.sweep_status(sweep_dir)] == ["done"] * 4

    again = sweep.launch(sweep_dir)  # everything finished: nothing runs
    assert again.count("skipped") == 4 and again.count("done") == 0
    status = CliRunner().invoke(app, ["sweep", "status", str(sweep_dir), "--runs"])
    assert status.exit_code == 0 and status.output.count("done") >= 4


def test_failing_runs_are_reported_and_do_not_stop_the_others(tmp_path):
    # synthetic with dims=1 has no shortcut feature column: its task fails to load; the two-moons runs still train
    spec = sweep.SweepSpec(
        ("synthetic", "two-moons"), ("erm",), (0,), steps=3, eval_every=3, data={"synthetic": {"dims": 1}}
    )
    summary = sweep.launch(tmp_path, spec, workers=0)  # in this process: the same run_one as the workers
    assert summary.count("done") == 1 and summary.count("failed") == 1
    failed = summary.failed[0]
    assert failed.folder_name.startswith("synthetic-") and "IndexError" in failed.error
    assert "Traceback" in (tmp_path / "runs" / failed.folder_name / "error.txt").read_text()
    states = {s.run.config.dataset: s.state for s in sweep.sweep_status(tmp_path)}
    assert states == {"synthetic": "failed", "two-moons": "done"}
    result = CliRunner().invoke(app, ["sweep", "launch", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 1 and "IndexError" in result.output


def test_a_dying_worker_fails_only_its_run_and_the_run_resumes_later(tmp_path):
    spec = sweep.SweepSpec(("synthetic",), ("erm",), (0, 1), steps=3000, eval_every=100)
    events, killed = [], []

    def on_event(event):
        events.append(event)
        if event.kind == "progress" and 200 <= event.step < 2000 and not killed:  # SIGKILL the worker mid-run
            (worker,) = [p for p in multiprocessing.active_children() if p.name == "gradstarve-sweep-worker"]
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(event.folder_name)

    summary = sweep.launch(tmp_path, spec, workers=1, threads_per_run=1, on_event=on_event)
    outcomes = {outcome.folder_name: outcome for outcome in summary.outcomes}
    assert len(killed) == 1 and outcomes[killed[0]].state == "failed"
    assert "died" in outcomes[killed[0]].error and "-9" in outcomes[killed[0]].error
    assert summary.count("done") == 1  # a new worker trained the other run
    assert not [p for p in multiprocessing.active_children() if p.name == "gradstarve-sweep-worker"]
    killed_dir = tmp_path / "runs" / killed[0]
    steps_before = [row["step"] for row in read_metrics(killed_dir)]
    assert 100 <= steps_before[-1] < 3000
    assert sweep.sweep_status(tmp_path)[0].state == "failed"
    again = sweep.launch(tmp_path, workers=0)  # resumes from the checkpoint
    assert again.count("done") == 1 and again.count("skipped") == 1
    assert [row["step"] for row in read_metrics(killed_dir)] == list(range(0, 3001, 100))
    assert not (killed_dir / "error.txt").exists()


def test_status_and_delete_incomplete(tmp_path):
    spec = sweep.SweepSpec(("synthetic",), ("erm",), (0, 1, 2), steps=8, eval_every=2)
    sweep.save_spec(tmp_path, spec)
    runs = sweep.plan(spec)
    root = sweep.runs_root(tmp_path)
    train(runs[0].config, root)  # done
    train(runs[1].config, root, max_steps=5)  # partial: checkpoint at step 4
    states = [(s.state, s.step, s.total) for s in sweep.sweep_status(tmp_path)]
    assert states == [("done", 8, 8), ("partial", 4, 8), ("not started", None, 8)]
    with sweep.run_lock(root / runs[1].folder_name):  # a live process training it: kept, and shown as running
        assert sweep.sweep_status(tmp_path)[1].state == "running"
        with pytest.raises(sweep.RunBusyError), sweep.run_lock(root / runs[1].folder_name, timeout=0.2):
            pass
        assert sweep.delete_incomplete(tmp_path) == []
    result = CliRunner().invoke(app, ["sweep", "delete-incomplete", str(tmp_path), "--yes"])
    assert result.exit_code == 0 and "deleted 1" in result.output
    assert [s.state for s in sweep.sweep_status(tmp_path)] == ["done", "not started", "not started"]
    assert (root / runs[0].folder_name / "done").exists()


# --------------------------------------------------------------------------------------------------------------
# Selection through collect, on hand-written metrics
# --------------------------------------------------------------------------------------------------------------
def _row(step, val, val_worst, test, train_accuracy):
    return {
        "step": step,
        "train/accuracy": train_accuracy,
        "val/accuracy": val,
        "val/worst_group_accuracy": val_worst,
        "test/accuracy": test,
    }


# (setting, seed) -> rows at steps 0, 100, 200: (val, val worst group, test, train)
METRICS = {
    (0, 0): [(0.50, 0.40, 0.50, 0.5), (0.80, 0.50, 0.60, 0.8), (0.70, 0.65, 0.70, 0.9)],
    (0, 1): [(0.50, 0.40, 0.50, 0.5), (0.82, 0.55, 0.62, 0.8), (0.72, 0.60, 0.66, 0.9)],
    (1, 0): [(0.50, 0.40, 0.50, 0.5), (0.78, 0.70, 0.80, 0.85), (0.76, 0.68, 0.85, 0.95)],
    (1, 1): [(0.50, 0.40, 0.50, 0.5), (0.76, 0.72, 0.84, 0.85), (0.74, 0.66, 0.71, 0.95)],
}


def _rows_of(run):
    return [_row(100 * i, *values) for i, values in enumerate(METRICS[(run.hparams_index, run.config.seed)])]


@pytest.mark.parametrize(
    ("rule", "setting", "steps", "test_mean", "test_std"),
    [
        ("last_step", "default", [200, 200], 68.0, 2.0),  # the default setting, last step: test 0.70, 0.66
        ("training_domain_validation", "default", [100, 100], 61.0, 1.0),  # mean best val 0.81 > 0.77
        ("average_validation", "default", [100, 100], 61.0, 1.0),
        ("worst_group_validation", "draw 1", [100, 100], 82.0, 2.0),  # mean best worst group 0.71 > 0.625
        ("test_domain_oracle", "draw 1", [200, 100], 84.5, 0.5),  # mean best test 0.845 > 0.68
    ],
)
def test_each_selection_rule_through_collect(tmp_path, rule, setting, steps, test_mean, test_std):
    hand_written_sweep(tmp_path, sweep.SweepSpec(("synthetic",), ("erm",), (0, 1), n_hparams=1), _rows_of)
    results = sweep.collect(tmp_path, rules=[rule])
    (row,) = results.table.to_dict("records")
    assert (row["rule"], row["hparams"], row["seeds"], row["candidates"]) == (
        rule,
        setting,
        2,
        2 if rule != "last_step" else 1,
    )
    assert row["test/accuracy mean"] == pytest.approx(test_mean, abs=1e-9)
    assert row["test/accuracy std"] == pytest.approx(test_std, abs=1e-9)
    assert row["oracle"] == (rule == "test_domain_oracle")
    (chosen,) = results.selected
    assert chosen["steps"] == steps and len(chosen["runs"]) == 2
    markdown = (tmp_path / "results" / "results.md").read_text()
    assert f"{test_mean:.1f} ± {test_std:.1f}" in markdown and rule in markdown
    csv = (tmp_path / "results" / "results.csv").read_text()
    assert csv.splitlines()[0].startswith("dataset,algorithm,rule,oracle,hparams,seeds")
    assert "\\begin{tabular}" in (tmp_path / "results" / "results.tex").read_text()


def test_collect_puts_the_papers_numbers_beside_ours(tmp_path):
    finals = {("erm", 0): (0.90, 0.23), ("erm", 1): (0.92, 0.25), ("sd", 0): (0.70, 0.68), ("sd", 1): (0.71, 0.70)}

    def rows_of(run):
        train_accuracy, test = finals[(run.config.algorithm, run.config.seed)]
        return [
            {"step": 0, "train/accuracy": 0.5, "test/accuracy": 0.5},
            {"step": 1001, "train/accuracy": train_accuracy, "test/accuracy": test},
        ]

    hand_written_sweep(tmp_path, sweep.SweepSpec(("colored-mnist",), ("erm", "sd"), (0, 1)), rows_of)
    results = sweep.collect(tmp_path)
    last = results.table[results.table["rule"] == "last_step"].set_index("algorithm")
    assert last.loc["erm", "test/accuracy mean"] == pytest.approx(24.0)
    assert last.loc["erm", "test/accuracy paper"] == 23.7 and last.loc["erm", "test/accuracy paper std"] == 0.8
    assert last.loc["erm", "test/accuracy Δ/σ"] == pytest.approx((24.0 - 23.7) / 0.8)
    assert last.loc["sd", "test/accuracy Δ/σ"] == pytest.approx((69.0 - 68.4) / 1.2)
    assert last.loc["sd", "train/accuracy Δ/σ"] == pytest.approx((70.5 - 70.0) / 0.9)
    # no val split: the validation rules are skipped with a note; the oracle still runs and is labelled
    assert set(results.table["rule"]) == {"last_step", "test_domain_oracle"}
    assert any("training_domain_validation skipped" in note and "val/accuracy" in note for note in results.notes)
    assert any("oracle" in note for note in results.notes)
    markdown = (tmp_path / "results" / "results.md").read_text()
    assert "test/accuracy (paper)" in markdown and "23.7 ± 0.8" in markdown and "+0.4" in markdown
    result = CliRunner().invoke(app, ["sweep", "collect", str(tmp_path), "--rule", "last_step"])
    assert result.exit_code == 0 and "last_step" in result.output and "results.md" in result.output


def test_variants_are_named_methods_with_their_own_search_space(tmp_path):
    variants = {
        "sd_wide": {
            "algorithm": "sd",
            "defaults": {"sd_lam": 0.5},
            "overrides": {"sd_gamma": 0.25},
            "search": {"sd_lam": {"log_uniform": [10.0, 30.0]}},
        }
    }
    spec = sweep.SweepSpec(("synthetic",), ("sd", "sd_wide"), (0,), n_hparams=3, variants=variants)
    assert sweep.SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    runs = [run for run in sweep.plan(spec) if run.method == "sd_wide"]
    assert [run.config.algorithm for run in runs] == ["sd"] * 4
    lams = [run.config.hparams["sd_lam"] for run in runs]
    assert lams[0] == 0.5 and all(10.0 <= lam <= 30.0 for lam in lams[1:])  # the table's range is [2e-5, 0.2]
    assert all(run.config.hparams["sd_gamma"] == 0.25 for run in runs)
    plain = [run for run in sweep.plan(spec) if run.method == "sd"]
    assert all(run.config.hparams["sd_lam"] <= 0.2 for run in plain)

    def rows(run):
        return [{"step": 0, "test/accuracy": 0.5}, {"step": 10, "test/accuracy": 0.6 if run.method == "sd" else 0.9}]

    hand_written_sweep(tmp_path, spec, rows)
    table = sweep.collect(tmp_path, rules=["last_step"]).table.set_index("algorithm")
    assert table.loc["sd_wide", "test/accuracy mean"] == pytest.approx(90.0)
    assert table.loc["sd", "test/accuracy mean"] == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"erm": {"algorithm": "sd"}}, "name of another algorithm"),
        ({"x": {"algorithm": "nope"}}, "needs 'algorithm'"),
        ({"x": {"algorithm": "sd", "serach": {}}}, "unknown fields"),
        ({"x": {"algorithm": "sd", "search": {"sd_lamda": {"fixed": 1}}}}, "unknown hyperparameters"),
        ({"x": {"algorithm": "sd", "search": {"sd_lam": {"log_uniform": [0, 1]}}}}, "0 < low"),
        ({"x": {"algorithm": "sd", "search": {"sd_lam": {"gauss": [0, 1]}}}}, "unknown distribution"),
    ],
)
def test_bad_variants_are_refused(variants, message):
    with pytest.raises(ValueError, match=message):
        sweep.SweepSpec(("synthetic",), ("erm",), variants=variants)


def test_collect_with_a_validation_rule_and_no_validation_split_explains_the_fix(tmp_path):
    def rows(run):
        return [{"step": 0, "test/accuracy": 0.5}, {"step": 10, "test/accuracy": 0.6}]

    hand_written_sweep(tmp_path, sweep.SweepSpec(("two-moons",), ("erm",), (0,)), rows)
    with pytest.raises(ValueError, match=r"need a validation split: launch with e.g. --data val_fraction=0.1"):
        sweep.collect(tmp_path, rules=["training_domain_validation"])

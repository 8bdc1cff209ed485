"""The examples run end to end at a tiny size, and a registered task is a task like the built-in ones: sweeps,
``hparams`` and the trainer accept its name, in this process and (through $GRADSTARVE_TASK_MODULES) in others."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradstarve.data.base import LabelledData
from gradstarve.experiments.tasks import load_task, register_task, task_names
from gradstarve.experiments.train import make_config, train
from gradstarve.hparams import default_hparams

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the example look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_shortcut_task_example_registers_sweeps_and_tabulates(tmp_path, one_thread):
    example = load_example("register_shortcut_task")
    results = example.main(["--fake", "--n", "400", "--steps", "10", "--seeds", "1", "--out", str(tmp_path)])
    table = results.table
    assert set(table["algorithm"]) == {"erm", "sd"} and (table["seeds"] == 1).all()
    assert set(table["rule"]) == {"last_step", "worst_group_validation"}
    assert "patch-mnist" in task_names()
    assert default_hparams("erm", "patch-mnist")["hidden"] == [128, 128]  # the row given at registration


def _tiny_loader(seed: int, n_points: int = 40) -> dict[str, LabelledData]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, 3, generator=generator)
    y = (x[:, 0] > 0).long()
    data = LabelledData(x, y, y.clone(), ("negative", "positive"), "tiny")
    return {"train": data, "test": data}


def test_a_registered_task_trains_and_is_checked_like_a_built_in_one(tmp_path):
    register_task("tiny-test-task", _tiny_loader, hparams={"steps": 5}, options={"n_points": int}, replace=True)
    result = train(make_config("tiny-test-task", "erm", data={"n_points": 20}, eval_every=5), tmp_path)
    assert [row["step"] for row in result.metrics] == [0, 5]
    assert sum(result.metrics[-1]["train/group_count"]) == 20 and len(result.metrics[-1]["train/group_count"]) == 2
    with pytest.raises(ValueError, match=r"unknown option 'n_pionts'.*did you mean 'n_points'"):
        load_task("tiny-test-task", {"n_pionts": 3})
    with pytest.raises(ValueError, match="already registered"):
        register_task("tiny-test-task", _tiny_loader)
    with pytest.raises(ValueError, match="new, non-empty string"):
        register_task("colored-mnist", _tiny_loader)


def test_other_processes_find_registered_tasks_through_the_environment():
    env = {**os.environ, "GRADSTARVE_TASK_MODULES": "register_shortcut_task", "PYTHONPATH": str(EXAMPLES)}
    out = subprocess.run(
        [sys.executable, "-m", "gradstarve.cli", "hparams", "sd", "patch-mnist", "--json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert '"hidden": [' in out and '"steps": 300' in out


def test_gradstarve_analyse_diagnoses_a_trained_run_folder(tmp_path, capsys):
    from gradstarve.cli import main
    from gradstarve.experiments.analyse import analyse_run

    run = make_config("synthetic", "erm", overrides={"steps": 30}, eval_every=10)
    run_dir = train(run, tmp_path).run_dir
    result = analyse_run(run_dir, n=60, k=4)
    assert list(result.table["feature"]) == [1, 2, 3, 4] and all(path.exists() for path in result.files)
    assert "carr" in (run_dir / "analysis" / "starvation.md").read_text()  # the verdict
    with pytest.raises(SystemExit) as exit_info:
        main(["analyse", str(run_dir), "--n", "40", "--k", "3", "--out", str(tmp_path / "cli")])
    assert exit_info.value.code == 0 and (tmp_path / "cli" / "starvation.png").exists()
    (run_dir / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match=r"no checkpoint\.pt"):
        analyse_run(run_dir)


def test_the_cnn_example_reports_the_shortcut_and_groups(capsys, one_thread):
    table = load_example("analyse_your_cnn").main(["--n", "120", "--probe", "60", "--steps", "5"])
    assert list(table["feature"]) == [1, 2, 3, 4, 5, 6]
    assert (table["strength"].diff().dropna() <= 1e-12).all()  # sorted, strongest first
    assert {"alignment_core", "alignment_shortcut"} <= set(table.columns)
    assert "class 1, patch agrees" in capsys.readouterr().out


def test_the_plain_loop_example_trains_erm_and_sd_and_tracks_z(one_thread):
    outcomes = load_example("sd_in_your_loop").main(["--n", "200", "--steps", "20"])
    assert [outcome.loss for outcome in outcomes] == ["erm", "sd"]
    assert all(len(outcome.z_final) == 5 and outcome.verdict for outcome in outcomes)
    assert all(0.0 <= outcome.test_accuracy <= 1.0 for outcome in outcomes)


def test_the_lightning_example_fits_and_writes_the_report(tmp_path, one_thread):
    pytest.importorskip("lightning.pytorch")
    callback = load_example("lightning_callback").main(
        ["--n", "256", "--probe", "40", "--epochs", "1", "--every", "1", "--out", str(tmp_path)]
    )
    assert callback.history["step"].tolist() == [0, 1, 2]  # 256 rows in batches of 128
    assert all(path.exists() for path in callback.files)

"""What a new user hits: one-line errors with a non-zero exit (tracebacks only with --debug), a device that is not
there, theory in the strong-feature regime, divergence as an error, warnings for schedules that never switch on,
plain-text tables off a terminal, and a report whose summary says what each part showed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from gradstarve import theory
from gradstarve.cli import main
from gradstarve.devices import resolve_device
from gradstarve.experiments.reproduce.base import evidence
from gradstarve.experiments.train import (
    ScheduleNeverSwitchesWarning,
    make_config,
    require_tensorboard,
    train,
)


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_a_failure_is_one_line_with_a_non_zero_exit(capsys, tmp_path):
    code, _, err = run_cli(capsys, "ntk", "spectrum", "--dataset", "colored-mnist", "--data-root", str(tmp_path))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MNIST")
    assert "gradstarve data download mnist" in lines[0] and "--debug" in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    from gradstarve.data.errors import MissingDataError

    with pytest.raises(MissingDataError):
        main(["--debug", "ntk", "spectrum", "--dataset", "colored-mnist", "--data-root", str(tmp_path)])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_a_clear_error(capsys, tmp_path):
    with pytest.raises(ValueError, match="use --device cpu or auto"):
        resolve_device("cuda")
    code, out, err = run_cli(capsys, "sweep", "launch", str(tmp_path / "s"), "--datasets", "synthetic", "--algorithms",
                             "erm", "--device", "cuda")  # fmt: skip
    assert code == 1 and "asked for a GPU" in out + err and not (tmp_path / "s" / "runs").exists()
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_theory_handles_strong_features_with_the_exact_fixed_point():
    U = theory.coupled_pair(0.6)
    assert not theory.lemma1_applies(U, [100.0, 2.0], 0.01)
    simulation = theory.simulate(U, [100.0, 2.0], 0.01, n_steps=200)
    assert "Lemma 1 does not apply" in simulation.approx_method
    exact = theory.fixed_point(U, [100.0, 2.0], 0.01, approx=True)
    np.testing.assert_allclose(simulation.approx_fixed_point.z, exact.z, rtol=1e-10)


def test_a_diverging_simulation_is_an_error_not_output():
    with pytest.raises(ValueError, match=r"primal gradient descent diverged.*use a smaller one"):
        theory.simulate(theory.coupled_pair(0.6), [6.0, 2.0], 0.01, n_steps=2000, primal_lr=1000.0)


def test_cli_theory_commands_in_the_strong_feature_regime(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "theory", "starvation", "--s1-max", "100", "--out", str(tmp_path))
    assert code == 0 and (tmp_path / "starvation.csv").exists()
    assert "holds" in out


def test_a_penalty_that_never_switches_on_is_flagged(tmp_path):
    run = make_config("synthetic", "sd", overrides={"steps": 5, "sd_schedule": "step", "sd_anneal_steps": 10})
    with pytest.warns(ScheduleNeverSwitchesWarning, match="switches on at step 10 but the run ends at step 5"):
        result = train(run, tmp_path)
    assert result.notes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(make_config("synthetic", "sd", overrides={"steps": 5}), tmp_path)  # constant schedule: no warning


def test_missing_tensorboard_is_named(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
        require_tensorboard()


def test_tables_off_a_terminal_are_plain_and_complete(capsys):
    code, out, _ = run_cli(capsys, "hparams", "sd", "colored-mnist")
    assert code == 0
    assert "…" not in out and "+--" in out  # ASCII box, no cell cut short
    assert "the released schedule: nll + sd_coef·mean(ŷ²) before step 450" in out


def test_evidence_names_what_a_part_showed():
    assert evidence(sigmas=[0.5, -1.9]) == "within the paper's 2σ"
    assert evidence(sigmas=[0.5, -12.5, None]) == "off by up to 12.5σ, 1 of 2 beyond 2σ"
    assert evidence(quick=True, sigmas=[0.1]).startswith("smoke test")
    assert evidence(checks=False, what="x") == "checks FAIL (x)"
    assert evidence() == "ran; no paper number to compare with"


def test_non_finite_inputs_are_named_not_turned_into_a_nan_kernel_or_blamed_on_the_learning_rate():
    import torch

    from gradstarve.algorithms import ALGORITHMS
    from gradstarve.hparams import default_hparams
    from gradstarve.models import MLP
    from gradstarve.ntk import empirical_ntk

    model = MLP(3, (4,), 1, generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of its 6 examples hold NaN"):
        empirical_ntk(model, x)
    erm = ALGORITHMS["erm"](model, default_hparams("erm", "synthetic"), 1)
    with pytest.raises(FloatingPointError, match="inputs hold NaN"):
        erm.update((x, torch.zeros(6, dtype=torch.int64)))


def test_sweep_launch_with_tensorboard_writes_event_files(capsys, tmp_path):
    pytest.importorskip("tensorboard")
    code, out, err = run_cli(
        capsys, "sweep", "launch", str(tmp_path / "s"), "--datasets", "synthetic", "--algorithms", "erm",
        "--steps", "4", "--workers", "0", "--tensorboard",
    )  # fmt: skip
    assert code == 0, out + err
    events = list((tmp_path / "s" / "runs").glob("*/tensorboard/events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events[0].parent)).Reload()
    tags = logged.Tags()["scalars"]
    assert {"z/z1", "z/z5", "test/accuracy"} <= set(tags)
    run_dir = events[0].parents[1]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [event.step for event in logged.Scalars("z/z1")] == [row["step"] for row in rows]
    # z at the last evaluation is U^T (Y ŷ) of the trained network, with U the features at initialisation
    from gradstarve.analysis import FeatureAnalysis
    from gradstarve.experiments.execute import config_from_dict
    from gradstarve.experiments.runs import load_checkpoint
    from gradstarve.experiments.tasks import load_task

    config = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    task = load_task(config.dataset, config.data, config.seed)
    initial = task.build_model(config.hparams, torch.Generator().manual_seed(config.seed))
    n = min(256, len(task.train))
    analysis = FeatureAnalysis(k=5).fit(initial, task.train.x[:n], 2 * task.train.y[:n] - 1)
    state = load_checkpoint(run_dir / "checkpoint.pt")["algorithm"]
    initial.load_state_dict({key[len("model.") :]: value for key, value in state.items() if key.startswith("model.")})
    with torch.no_grad():
        expected = analysis.response(initial.eval()(task.train.x[:n]).reshape(-1))
    assert logged.Scalars("z/z1")[-1].value == pytest.approx(expected[0], rel=1e-5, abs=1e-6)

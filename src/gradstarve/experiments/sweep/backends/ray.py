"""The Ray backend of :func:`gradstarve.experiments.sweep.launch`: one Ray Tune trial per run.

Needs the ``ray`` extra (``pip install "gradstarve[ray]"``); Ray is imported only here, and this module only when
this backend runs.

Each trial calls :func:`gradstarve.experiments.sweep.run_one` (hence :func:`~gradstarve.experiments.train.train`)
with the run's config and writes the same run folder a local launch would: results, resuming and skipping never
depend on Ray's own bookkeeping (kept in ``<sweep>/ray/``). Without ``address`` the launch starts a local Ray
instance with ``workers * cpus_per_run`` CPUs and shuts it down at the end; with ``address`` (``"auto"``,
``"ray://head:10001"``, ...) it connects to that cluster, whose every node must have gradstarve installed and see the
sweep folder at the same path (shared storage). If Ray is already initialised in this process it is used as is.

Trials report ``{"step", "total"}`` to Tune every couple of seconds while training and ``{"state", "seconds",
"error"}`` at the end; a :class:`ray.tune.Callback` turns those into :class:`~gradstarve.experiments.sweep.RunEvent` s
in the launching process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Tune's console tables only repeat what the progress display shows (read when Tune starts; set before importing it).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

try:
    import ray
    from ray import tune
except ModuleNotFoundError as error:  # pragma: no cover - the [test] extra installs Ray
    raise ModuleNotFoundError(
        'the Ray backend needs Ray: pip install "gradstarve[ray]" (with PIP_CONSTRAINT=constraints.txt)', name="ray"
    ) from error

from gradstarve.experiments.execute import (  # after setting the environment Tune reads
    EventHandler,
    PlannedRun,
    RunEvent,
    RunOutcome,
    config_from_dict,
    config_to_dict,
    run_one,
)

#: Seconds between two progress reports of a trial (each is a Tune result, so not too often).
REPORT_EVERY = 2.0


def _trial(
    params: dict[str, Any],
    runs_dir: str,
    data_root: str | None,
    device: str,
    threads: int,
    lock_timeout: float,
    tensorboard: bool = False,
) -> None:
    import torch

    torch.set_num_threads(threads)
    config = config_from_dict(params["trial"]["run"])
    last = [time.monotonic()]

    def progress(step: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > REPORT_EVERY and step < total:
            last[0] = now
            tune.report({"folder": config.folder_name(), "step": step, "total": total, "state": "running"})

    outcome = run_one(
        config,
        runs_dir,
        data_root=data_root,
        device=device,
        on_progress=progress,
        lock_timeout=lock_timeout,
        tensorboard=tensorboard,
    )
    tune.report(
        {
            "folder": outcome.folder_name,
            "state": outcome.state,
            "seconds": outcome.seconds,
            "error": outcome.error or "",
        }
    )


class _Events(tune.Callback):
    """Turns trial news into RunEvents, in the launching process. Tune pickles its run configuration (callbacks
    included) for its own experiment state; the handler (often a progress display, with locks) is not pickled."""

    def __init__(self, on_event: EventHandler | None, outcomes: dict[str, RunOutcome]) -> None:
        self.on_event = on_event
        self.outcomes = outcomes

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.on_event, self.outcomes = None, {}

    def _emit(self, event: RunEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._emit(RunEvent("started", trial.config["trial"]["run_folder"]))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        folder = trial.config["trial"]["run_folder"]
        state = result.get("state")
        if state == "running":
            self._emit(RunEvent("progress", folder, int(result["step"]), int(result["total"])))
        elif state is not None:
            outcome = RunOutcome(folder, state, float(result.get("seconds", 0.0)), result.get("error") or None)
            self.outcomes[folder] = outcome
            self._emit(RunEvent("finished", folder, outcome=outcome))

    def on_trial_error(self, iteration, trials, trial, **info):
        folder = trial.config["trial"]["run_folder"]
        if folder not in self.outcomes:
            outcome = RunOutcome(folder, "failed", 0.0, "the Ray trial failed (see the Ray logs in <sweep>/ray)")
            self.outcomes[folder] = outcome
            self._emit(RunEvent("finished", folder, outcome=outcome))


def launch_ray(
    runs: Sequence[PlannedRun],
    runs_dir: Path,
    *,
    workers: int,
    cpus_per_run: int,
    address: str | None,
    data_root: str | None,
    device: str,
    on_event: EventHandler | None,
    storage_dir: Path,
    lock_timeout: float = 10.0,
    tensorboard: bool = False,
) -> list[RunOutcome]:
    """Run ``runs`` as Ray Tune trials (``cpus_per_run`` CPUs each); return each run's outcome in order."""
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=workers * cpus_per_run,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        started = True
    outcomes: dict[str, RunOutcome] = {}
    try:
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial,
                runs_dir=str(Path(runs_dir).absolute()),
                data_root=data_root,
                device=device,
                threads=cpus_per_run,
                lock_timeout=lock_timeout,
                tensorboard=tensorboard,
            ),
            {"cpu": cpus_per_run},
        )
        configs = [{"run_folder": run.folder_name, "run": config_to_dict(run.config)} for run in runs]
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(
                name=time.strftime("launch-%Y%m%d-%H%M%S"),
                storage_path=str(Path(storage_dir).absolute()),
                verbose=0,
                callbacks=[_Events(on_event, outcomes)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
    missing = "the Ray trial reported no outcome (see the Ray logs in <sweep>/ray)"
    return [outcomes.get(run.folder_name, RunOutcome(run.folder_name, "failed", 0.0, missing)) for run in runs]

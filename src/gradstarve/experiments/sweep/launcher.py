"""The one launcher: :func:`launch` plans a spec, skips finished runs and executes the rest inline, on local
worker processes or on Ray."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradstarve.devices import resolve_device
from gradstarve.experiments.execute import (
    EventHandler,
    PlannedRun,
    RunEvent,
    RunOutcome,
    run_one,
)
from gradstarve.experiments.runs import (
    check_run_folder,
    is_done,
)
from gradstarve.experiments.sweep.planning import plan
from gradstarve.experiments.sweep.spec import BACKENDS, SweepSpec, open_spec, runs_root, save_spec
from gradstarve.experiments.tasks import check_data, load_task
from gradstarve.experiments.train import require_tensorboard


@dataclass
class LaunchSummary:
    """The outcome of every run of a launch (finished runs included, as ``"skipped"``)."""

    outcomes: list[RunOutcome]
    seconds: float

    def count(self, state: str) -> int:
        return sum(outcome.state == state for outcome in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [outcome for outcome in self.outcomes if outcome.state in ("failed", "busy")]


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def launch(
    sweep_dir: Path | str,
    spec: SweepSpec | None = None,
    *,
    backend: str = "local",
    workers: int | None = None,
    threads_per_run: int | None = None,
    address: str | None = None,
    data_root: Path | str | None = None,
    device: str = "cpu",
    on_event: EventHandler | None = None,
    lock_timeout: float = 10.0,
    runs_dir: Path | str | None = None,
    tensorboard: bool = False,
) -> LaunchSummary:
    """Run every unfinished run of the sweep in ``sweep_dir`` (writing ``spec`` there first if given).

    Args:
        backend: ``"local"`` (process pool) or ``"ray"`` (Ray Tune).
        workers: runs at a time (default: the CPU count). Local: worker processes; 0 runs them one after the other
            in this process, with this process's torch threads (for debugging: a crash then stops the launch).
            Ray: the CPUs of the local instance the launch starts (ignored with ``address``).
        threads_per_run: torch threads (and Ray CPUs) per run; default ``max(1, cpus // workers)``.
        address: Ray only: the address of an existing cluster (``"auto"``, ``"ray://host:10001"``, ...); the sweep
            folder must then be on storage every node sees.
        data_root: where data files live (not part of a run's identity).
        on_event: receives :class:`RunEvent` s (progress displays).
        tensorboard: also log every run's evaluation scalars to ``<run>/tensorboard`` (the tensorboard package:
            ``pip install "gradstarve[tensorboard]"``; checked before anything runs).
        runs_dir: put the run folders here instead of ``sweep_dir/runs`` (several sweeps, e.g. a search and its
            final seeds, can then share one folder of runs; a run is the same folder whichever sweep plans it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers is not None and (workers < 0 or (workers == 0 and backend != "local")):
        raise ValueError(f"workers must be >= 1 (or 0 for the local backend: in this process), got {workers}")
    if threads_per_run is not None and threads_per_run < 1:
        raise ValueError(f"threads_per_run must be >= 1, got {threads_per_run}")
    if address is not None and backend != "ray":
        raise ValueError("address is a Ray cluster address: use it with backend='ray'")
    resolve_device(device)  # an accelerator that is not there fails here, not once per run
    if tensorboard:
        require_tensorboard()
    sweep_dir = Path(sweep_dir).absolute()
    if spec is not None:
        save_spec(sweep_dir, spec)
    runs = plan(open_spec(sweep_dir))
    root = Path(runs_dir).absolute() if runs_dir is not None else runs_root(sweep_dir)
    data_root = None if data_root is None else str(Path(data_root).expanduser().absolute())
    preflight = {}
    for run in runs:  # the data of every unfinished run, checked once per (dataset, options), before any folder
        if not is_done(root / run.folder_name):
            options = {**run.config.data, **({"data_root": data_root} if data_root is not None else {})}
            preflight.setdefault((run.config.dataset, json.dumps(options, sort_keys=True, default=str)), options)
    for (dataset, _), options in preflight.items():
        check_data(dataset, options)
    root.mkdir(parents=True, exist_ok=True)
    inline = workers == 0
    workers = workers or default_workers()
    threads = threads_per_run or max(1, default_workers() // workers)
    start = time.perf_counter()
    skipped, todo = [], []
    for run in runs:
        if is_done(root / run.folder_name):
            try:
                check_run_folder(root / run.folder_name, run.config)
                skipped.append(RunOutcome(run.folder_name, "skipped"))
            except ValueError as error:
                skipped.append(RunOutcome(run.folder_name, "failed", 0.0, str(error)))
        else:
            todo.append(run)
    if on_event is not None:
        for outcome in skipped:
            on_event(RunEvent("finished", outcome.folder_name, outcome=outcome))
    if not todo:
        outcomes: list[RunOutcome] = []
    elif inline:
        cache: dict[str, Any] = {}
        outcomes = [
            _run_inline(run, root, data_root, device, on_event, lock_timeout, cache, tensorboard) for run in todo
        ]
    elif backend == "local":
        from gradstarve.experiments.sweep.backends.local import launch_local

        outcomes = launch_local(todo, root, workers, threads, data_root, device, on_event, lock_timeout, tensorboard)
    else:
        try:
            from gradstarve.experiments.sweep.backends.ray import launch_ray
        except ModuleNotFoundError as error:
            if error.name != "ray":
                raise
            raise ValueError(str(error)) from None

        outcomes = launch_ray(
            todo,
            root,
            workers=workers,
            cpus_per_run=threads,
            address=address,
            data_root=data_root,
            device=device,
            on_event=on_event,
            storage_dir=sweep_dir / "ray",
            lock_timeout=lock_timeout,
            tensorboard=tensorboard,
        )
    return LaunchSummary(skipped + outcomes, time.perf_counter() - start)


def _run_inline(
    run: PlannedRun,
    root: Path,
    data_root: str | None,
    device: str,
    on_event: EventHandler | None,
    lock_timeout: float,
    cache: dict[str, Any],
    tensorboard: bool = False,
) -> RunOutcome:
    def progress(step: int, total: int) -> None:
        if on_event is not None:
            on_event(RunEvent("progress", run.folder_name, step, total))

    if on_event is not None:
        on_event(RunEvent("started", run.folder_name))
    # Runs that share their data (same dataset, options and seed; neighbours in plan order) share one loaded task.
    config = run.config
    key = json.dumps([config.dataset, dict(config.data), config.seed, data_root], sort_keys=True, default=str)
    if cache.get("key") != key:
        cache.clear()
        try:
            options = {**config.data, **({"data_root": data_root} if data_root else {})}
            cache.update(key=key, task=load_task(config.dataset, options, config.seed))
        except Exception:  # run_one loads it again and reports the error in the run folder
            cache.clear()
    outcome = run_one(
        config,
        root,
        data_root=data_root,
        device=device,
        task=cache.get("task"),
        on_progress=progress,
        lock_timeout=lock_timeout,
        tensorboard=tensorboard,
    )
    if on_event is not None:
        on_event(RunEvent("finished", run.folder_name, outcome=outcome))
    return outcome

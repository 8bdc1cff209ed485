"""Sweeps: datasets x algorithms x seeds x hyperparameter settings, run resumably, locally or on Ray, then collected.

A sweep folder holds

* ``spec.json``: the :class:`SweepSpec` (what to run);
* ``runs/<dataset>-<algorithm>-s<seed>-<hash>/``: one run folder per run (:mod:`gradstarve.experiments.train`'s
  layout: ``config.json``, append-only ``metrics.jsonl``, ``checkpoint.pt``, ``done``), named by the hash of the
  run's full configuration, so a run is the same folder whichever sweep, backend or machine launches it;
* ``results/``: :func:`collect`'s tables (``results.md``, ``results.csv``, ``results.tex``, ``selected.json``);
* ``ray/``: Ray Tune's own bookkeeping (Ray backend only; the results never depend on it).

Hyperparameters (DomainBed's protocol): setting 0 is :func:`gradstarve.hparams.default_hparams`; settings
``1..n_hparams`` are :func:`gradstarve.hparams.random_hparams` draws seeded by ``(hparams_seed, i)``, the same draw for
every trial seed, so a setting's seeds can be averaged. ``overrides`` (and ``steps``) then apply to every setting.

Launching (:func:`launch`) skips finished runs (a ``done`` marker), resumes a run killed mid-way from its last
checkpoint (train.py drops any metrics line newer than the checkpoint, so no line is ever duplicated), and holds an
exclusive lock on each run folder while it trains (``fcntl.flock`` on ``<run>/.lock``; released by the kernel when a
process dies), so two launches of one sweep never train the same run at once. Backends:

* ``local``: a pool of ``workers`` long-lived worker processes (``spawn``;
  :mod:`gradstarve.experiments.sweep_local`), each training one run at a time with ``cpus // workers`` torch
  threads (``workers=0``: one by one in this process). A run that raises, or a worker that dies (segfault, out of
  memory), fails only that run: the error goes to ``<run>/error.txt`` and a fresh worker takes the next run.
  Workers die with the launcher (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread), so a killed launch leaves
  nothing running.
* ``ray``: Ray Tune, one trial per run, each calling :func:`run_one` (hence ``train``) and writing the same run
  folders (:mod:`gradstarve.experiments.sweep_ray`).

:func:`collect` applies every model-selection rule of :mod:`gradstarve.experiments.selection` to the finished runs
and writes mean ± std tables (over seeds, ddof = 0 as the paper) per (dataset, algorithm) and rule, with the paper's
numbers (:mod:`gradstarve.experiments.reproduce.paper_numbers`) and the differences in the paper's std units in
adjacent columns.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradstarve.devices import resolve_device
from gradstarve.experiments import selection
from gradstarve.experiments.compare import difference_in_std, paper_number, plus_minus
from gradstarve.experiments.execute import (
    ERROR_FILE,
    EventHandler,
    PlannedRun,
    RunBusyError,
    RunEvent,
    RunOutcome,
    is_running,
    run_lock,
    run_one,
)
from gradstarve.experiments.reproduce.base import Reproduction
from gradstarve.experiments.tables import latex_table, markdown_table
from gradstarve.experiments.tasks import check_data, check_task_options, load_task, task_names
from gradstarve.experiments.train import (
    DamagedRunError,
    RunConfig,
    check_run_folder,
    inspect_run,
    is_done,
    nonfinite_metrics,
    read_metrics,
    require_tensorboard,
)
from gradstarve.hparams import ALGORITHM_NAMES, default_hparams, distribution_from_spec, random_hparams

BACKENDS = ("local", "ray")
SPEC_FILE = "spec.json"
RUNS_DIR = "runs"
RESULTS_DIR = "results"


# --------------------------------------------------------------------------------------------------------------
# What to run
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """A sweep: every combination of ``datasets`` x ``algorithms`` x hyperparameter settings x ``seeds``.

    Attributes:
        datasets, algorithms: names from :func:`gradstarve.experiments.tasks.task_names` and
            :data:`gradstarve.hparams.ALGORITHM_NAMES`.
        seeds: trial seeds (model initialisation, batch order, the data's randomness).
        n_hparams: random hyperparameter draws besides the defaults (0: defaults only).
        hparams_seed: seeds the draws (draw ``i`` uses :func:`draw_seed` ``(hparams_seed, i)``).
        steps: training length of every run (replaces the table's ``steps``, or its ``epochs``); ``None``: table's.
        overrides: hyperparameter values for every run that has the hyperparameter (e.g. ``{"sd_lam": 0.1}``
            changes SD runs only); a name no (algorithm, dataset) pair of the sweep knows is refused.
        data: task options per dataset, e.g. ``{"colored-mnist": {"val_fraction": 0.1}}``.
        eval_every, eval_splits, precision: as :class:`~gradstarve.experiments.train.RunConfig`.
        variants: named methods built on an algorithm, usable in ``algorithms`` beside the plain names, e.g.
            ``{"sd_eq25": {"algorithm": "sd", "overrides": {"sd_gamma": 0.0}, "search": {"sd_lam": {"log_uniform":
            [1e-3, 30]}}, "defaults": {"sd_lam": 0.1}}}``. ``grid`` (``{"sd_lam": [0.1, 1.0]}``) makes the
            variant's settings exactly the grid's points, in order (its cartesian product; no default, no draws);
            ``data`` adds task options to the spec's for this variant's runs; ``search`` replaces the table's
            search distributions
            (:func:`gradstarve.hparams.distribution_from_spec`), ``defaults`` changes setting 0 only, ``overrides``
            every setting (after the sweep's own ``overrides``), ``remove`` drops hyperparameters the variant does
            not read (e.g. ``momentum`` once the optimizer is Adam). Runs of a variant are grouped under its name;
            a variant may carry its own algorithm's name (``"erm": {"algorithm": "erm", "overrides": ...}``).
    """

    datasets: tuple[str, ...]
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    n_hparams: int = 0
    hparams_seed: int = 0
    steps: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    eval_every: int = 100
    eval_splits: tuple[str, ...] | None = None
    precision: str = "float32"
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("datasets", "algorithms", "seeds"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
            if len(set(getattr(self, name))) != len(value):
                raise ValueError(f"{name} has duplicates: {list(value)}")
        unknown = [d for d in self.datasets if d not in task_names()]
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; known: {', '.join(task_names())}")
        self._check_variants()
        unknown = [a for a in self.algorithms if a not in ALGORITHM_NAMES and a not in self.variants]
        if unknown:
            known = ", ".join([*ALGORITHM_NAMES, *self.variants])
            raise ValueError(f"unknown algorithms {unknown}; known: {known} (variants are defined in 'variants')")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        for name, low in (("n_hparams", 0), ("hparams_seed", 0), ("eval_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"steps must be an integer >= 1 or None, got {self.steps!r}")
        extra = set(self.data) - set(self.datasets)
        if extra:
            raise ValueError(f"data options given for datasets not in the sweep: {sorted(extra)}")
        if self.eval_splits is not None:
            object.__setattr__(self, "eval_splits", tuple(self.eval_splits))
        known = {
            name for d in self.datasets for a in self.algorithms for name in default_hparams(self.algorithm_of(a), d)
        } | {"steps"}
        unknown = set(self.overrides) - known
        if unknown:
            raise ValueError(f"overrides name unknown hyperparameters {sorted(unknown)}; known: {sorted(known)}")

    def _check_variants(self) -> None:
        fields_ = {"algorithm", "defaults", "overrides", "search", "remove", "grid", "data", "label"}
        for name, variant in self.variants.items():
            if not isinstance(variant, Mapping) or variant.get("algorithm") not in ALGORITHM_NAMES:
                raise ValueError(f"variant {name!r} needs 'algorithm', one of {', '.join(ALGORITHM_NAMES)}")
            if name in ALGORITHM_NAMES and name != variant["algorithm"]:
                raise ValueError(f"variant {name!r} has the name of another algorithm; give it its own name")
            extra = set(variant) - fields_
            if extra:
                raise ValueError(f"variant {name!r}: unknown fields {sorted(extra)}; known: {sorted(fields_)}")
            for dataset in self.datasets:
                known = set(default_hparams(variant["algorithm"], dataset))
                for part in ("defaults", "overrides", "search", "remove", "grid"):
                    unknown = set(variant.get(part, ())) - known
                    if unknown:
                        raise ValueError(f"variant {name!r} {part}: unknown hyperparameters {sorted(unknown)}")
            grid = variant.get("grid", {})
            if grid and (variant.get("search") or variant.get("defaults")):
                raise ValueError(f"variant {name!r}: a grid replaces the default and the random draws; drop them")
            clash = set(grid) & set(variant.get("overrides", {}))
            if clash:
                raise ValueError(f"variant {name!r}: {sorted(clash)} are both grid axes and overrides")
            if any(not isinstance(values, list | tuple) or not values for values in grid.values()):
                raise ValueError(f"variant {name!r}: every grid axis needs a non-empty list of values")
            if variant.get("data"):
                for dataset in self.datasets:
                    check_task_options(dataset, {**self.data.get(dataset, {}), **variant["data"]})
            for key, distribution in variant.get("search", {}).items():
                distribution_from_spec(distribution, f"variant {name!r} search {key!r}")

    def algorithm_of(self, method: str) -> str:
        """The algorithm a method of ``algorithms`` runs (itself, or its variant's algorithm)."""
        return self.variants[method]["algorithm"] if method in self.variants else method

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["overrides"] = dict(self.overrides)
        values["data"] = {k: dict(v) for k, v in self.data.items()}
        values["variants"] = json.loads(json.dumps(self.variants))
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SweepSpec:
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown sweep spec fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)


def load_spec(path: Path | str) -> SweepSpec:
    """A :class:`SweepSpec` from a ``.json`` or ``.toml`` file (the field names of :class:`SweepSpec`)."""
    path = Path(path)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError("TOML sweep specs need Python >= 3.11; write the spec as JSON") from None
        values = tomllib.loads(path.read_text())
    elif path.suffix == ".json":
        values = json.loads(path.read_text())
    else:
        raise ValueError(f"a sweep spec is a .json or .toml file, got {path}")
    return SweepSpec.from_dict(values)


def draw_seed(hparams_seed: int, index: int) -> int:
    """The :func:`~gradstarve.hparams.random_hparams` seed of draw ``index`` (>= 1) of a sweep: a hash of both, so
    draws of different ``hparams_seed`` do not overlap."""
    digest = hashlib.sha256(f"sweep-draw:{hparams_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _settings(spec: SweepSpec, method: str, dataset: str) -> list[dict[str, Any]]:
    algorithm = spec.algorithm_of(method)
    variant = spec.variants.get(method, {})
    grid = variant.get("grid", {})
    if grid:  # exactly the grid's points
        points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        settings = [default_hparams(algorithm, dataset) for _ in points]
    else:
        points = []
        search = {k: distribution_from_spec(v, k) for k, v in variant.get("search", {}).items()}
        settings = [{**default_hparams(algorithm, dataset), **variant.get("defaults", {})}]
        settings += [
            random_hparams(algorithm, dataset, draw_seed(spec.hparams_seed, i), search)
            for i in range(1, spec.n_hparams + 1)
        ]
    for index, hparams in enumerate(settings):
        hparams.update({k: v for k, v in spec.overrides.items() if k in hparams})
        hparams.update(variant.get("overrides", {}))
        if points:
            hparams.update(points[index])
        for name in variant.get("remove", ()):
            hparams.pop(name, None)
        if spec.steps is not None:
            hparams.pop("epochs", None)  # an explicit step count replaces an epoch count
            hparams["steps"] = spec.steps
    return settings


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of ``spec``, ordered dataset, seed, algorithm, setting (runs sharing data are neighbours).

    Identical configurations (a draw equal to the defaults, when nothing is searched) are one run, listed once
    under the lowest setting. Two *different* configurations with one folder name (a hash collision, about 2^-64
    per pair) raise ``ValueError`` rather than share a folder.
    """
    runs: dict[str, PlannedRun] = {}
    for dataset in spec.datasets:
        for seed in spec.seeds:
            for method in spec.algorithms:
                options = {**spec.data.get(dataset, {}), **spec.variants.get(method, {}).get("data", {})}
                for index, hparams in enumerate(_settings(spec, method, dataset)):
                    config = RunConfig(
                        dataset,
                        spec.algorithm_of(method),
                        hparams,
                        seed,
                        data=options,
                        eval_every=spec.eval_every,
                        eval_splits=spec.eval_splits,
                        precision=spec.precision,
                    )
                    name = config.folder_name()
                    if name in runs:
                        if runs[name].config.identity() != config.identity():
                            raise ValueError(
                                f"hash collision: two different configurations are both named {name}; change "
                                "hparams_seed to draw other settings"
                            )
                        continue
                    grid = spec.variants.get(method, {}).get("grid", {})
                    setting = (
                        ", ".join(
                            f"{k}={hparams[k]:g}" if isinstance(hparams[k], float) else f"{k}={hparams[k]}"
                            for k in grid
                        )
                        or None
                    )
                    runs[name] = PlannedRun(config, index, method, setting)
    return list(runs.values())


# --------------------------------------------------------------------------------------------------------------
# The sweep folder
# --------------------------------------------------------------------------------------------------------------
def runs_root(sweep_dir: Path | str) -> Path:
    return Path(sweep_dir) / RUNS_DIR


def save_spec(sweep_dir: Path | str, spec: SweepSpec) -> Path:
    """Write ``spec`` to ``sweep_dir/spec.json``; refuse if the folder already holds a different spec."""
    path = Path(sweep_dir) / SPEC_FILE
    if path.exists():
        existing = SweepSpec.from_dict(json.loads(path.read_text()))
        if existing != spec:
            raise ValueError(f"{path} holds a different sweep; relaunch it without spec options, or use another folder")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return path


def open_spec(sweep_dir: Path | str) -> SweepSpec:
    """The spec of an existing sweep folder."""
    path = Path(sweep_dir) / SPEC_FILE
    if not path.exists():
        raise ValueError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}); launch a sweep there first")
    return SweepSpec.from_dict(json.loads(path.read_text()))


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
        from gradstarve.experiments.sweep_local import launch_local

        outcomes = launch_local(todo, root, workers, threads, data_root, device, on_event, lock_timeout, tensorboard)
    else:
        try:
            from gradstarve.experiments.sweep_ray import launch_ray
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


# --------------------------------------------------------------------------------------------------------------
# Status and clean-up
# --------------------------------------------------------------------------------------------------------------
RUN_STATES = ("done", "running", "failed", "partial", "not started")


@dataclass(frozen=True)
class RunStatus:
    """``state``: ``done``, ``running`` (locked by a live process), ``failed`` (an ``error.txt`` from its last
    try), ``partial`` (some evaluation steps recorded) or ``not started``. ``step``: the last evaluated step;
    ``total``: the run's length where the config gives it in steps."""

    run: PlannedRun
    state: str
    step: int | None
    total: int | None
    error: str | None = None


def run_status(run: PlannedRun, root: Path) -> RunStatus:
    run_dir = root / run.folder_name
    hparams = run.config.hparams
    total = int(hparams["steps"]) if "steps" in hparams else None
    if not run_dir.exists():
        return RunStatus(run, "not started", None, total)
    if is_done(run_dir):
        summary = json.loads((run_dir / "done").read_text())
        return RunStatus(run, "done", summary.get("steps"), summary.get("steps"))
    try:
        rows = read_metrics(run_dir)
    except DamagedRunError as error:
        return RunStatus(run, "damaged", None, total, str(error))
    step = rows[-1]["step"] if rows else None
    if is_running(run_dir):
        return RunStatus(run, "running", step, total)
    if (run_dir / ERROR_FILE).exists():
        error = (run_dir / ERROR_FILE).read_text().strip().splitlines()
        return RunStatus(run, "failed", step, total, error[-1] if error else "")
    return RunStatus(run, "partial" if rows else "not started", step, total)


def sweep_status(sweep_dir: Path | str) -> list[RunStatus]:
    """The state of every run of the sweep in ``sweep_dir``, in plan order."""
    root = runs_root(sweep_dir)
    return [run_status(run, root) for run in plan(open_spec(sweep_dir))]


def delete_incomplete(sweep_dir: Path | str) -> list[Path]:
    """Delete every run folder of ``sweep_dir/runs`` without a ``done`` marker (runs of other specs included), except
    those a live process is training; return the deleted folders. Finished runs are never touched."""
    root = runs_root(sweep_dir)
    deleted = []
    if not root.exists():
        return deleted
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_done(run_dir):
            continue
        try:
            with run_lock(run_dir):
                if is_done(run_dir):
                    continue
                shutil.rmtree(run_dir)
        except RunBusyError:
            continue
        deleted.append(run_dir)
    return deleted


# --------------------------------------------------------------------------------------------------------------
# Collecting: model selection and tables
# --------------------------------------------------------------------------------------------------------------
def _metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = {key for row in rows for key in row}
    splits = sorted({key.rsplit("/", 1)[0] for key in keys if key.endswith("/accuracy") and key != "train/accuracy"})
    ordered = ["train"] if "train/accuracy" in keys else []
    ordered += [s for s in ("val", "test") if s in splits] + [s for s in splits if s not in ("train", "val", "test")]
    columns = [f"{split}/accuracy" for split in ordered]
    columns += [f"{s}/worst_group_accuracy" for s in ("val", "test") if f"{s}/worst_group_accuracy" in keys]
    return columns


@dataclass
class SweepResults:
    """:func:`collect`'s outcome: ``table`` has one row per (dataset, algorithm, rule) with, per metric ``m`` (in
    percent), ``m mean``, ``m std`` and, where the paper reports it, ``m paper``, ``m paper std``, ``m Δ/σ``."""

    table: pd.DataFrame
    metrics: list[str]
    selected: list[dict[str, Any]]
    notes: list[str]
    files: list[Path] = field(default_factory=list)

    def display_tables(self) -> dict[str, pd.DataFrame]:
        """One formatted table per rule ("mean ± std" strings), for markdown / LaTeX / reports."""
        tables = {}
        for rule, part in self.table.groupby("rule", sort=False):
            shown = pd.DataFrame(
                {
                    "dataset": part["dataset"],
                    "algorithm": part["algorithm"],
                    "hparams": part["hparams"],
                    "seeds": part["seeds"],
                }
            )
            for metric in self.metrics:
                if f"{metric} mean" not in part or part[f"{metric} mean"].isna().all():
                    continue
                shown[metric] = [
                    plus_minus(m, s) for m, s in zip(part[f"{metric} mean"], part[f"{metric} std"], strict=True)
                ]
                if f"{metric} paper" in part and part[f"{metric} paper"].notna().any():
                    shown[f"{metric} (paper)"] = [
                        plus_minus(m, s)
                        for m, s in zip(part[f"{metric} paper"], part[f"{metric} paper std"], strict=True)
                    ]
                    shown[f"{metric} Δ/σ"] = [_signed(v) for v in part[f"{metric} Δ/σ"]]
            rule_info = selection.get_rule(str(rule))
            tables[f"{rule}: {rule_info.description}"] = shown.reset_index(drop=True)
        return tables

    def as_reproduction(self, name: str = "sweep", title: str = "Sweep results") -> Reproduction:
        return Reproduction(name, title, tables=self.display_tables(), notes=list(self.notes), files=list(self.files))


def _signed(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else f"{value:+.1f}"


def collect(
    sweep_dir: Path | str, rules: Sequence[str] | None = None, out_dir: Path | str | None = None
) -> SweepResults:
    """Select (every rule, or ``rules``) among the sweep's finished runs and write the tables.

    For each (dataset, algorithm) and rule: each run's evaluation step is picked by the rule; the hyperparameter
    setting with the best mean score over its seeds is chosen (:func:`~gradstarve.experiments.selection.
    select_hyperparameters`; ``last_step`` has no score and reports the default setting, the paper's protocol);
    the table gives the mean ± std over the chosen setting's seeds of each metric at the picked steps. A rule that
    needs a split the runs do not evaluate (e.g. ``val``) is skipped for that group, with a note. Unfinished runs
    are left out, with a note. Writes ``results.{md,csv,tex}`` and ``selected.json`` into ``out_dir`` (default
    ``sweep_dir/results``).
    """
    sweep_dir = Path(sweep_dir)
    rules = list(rules) if rules is not None else list(selection.RULES)
    for rule in rules:
        selection.get_rule(rule)
    runs = plan(open_spec(sweep_dir))
    root = runs_root(sweep_dir)
    notes: list[str] = []
    groups: dict[tuple[str, str], dict[int, list[tuple[PlannedRun, list[dict]]]]] = {}
    unfinished = 0
    for run in runs:
        inspection = inspect_run(root / run.folder_name, run.config)
        if inspection.state == "damaged":
            notes.append(f"damaged run left out: {inspection.problem}")
            continue
        if not inspection.finished:
            unfinished += 1
            continue
        nonfinite = nonfinite_metrics(inspection.rows)
        if nonfinite:
            notes.append(f"diverged run left out (non-finite {', '.join(nonfinite[:3])}): {run.folder_name}")
            continue
        key = (run.config.dataset, run.method)
        groups.setdefault(key, {}).setdefault(run.hparams_index, []).append((run, inspection.rows))
        for note in inspection.notes:
            if note not in notes:
                notes.append(note)
    if unfinished:
        notes.append(f"{unfinished} of {len(runs)} runs are not finished and are left out")
    if not groups:
        raise ValueError(f"no finished runs in {root}: launch the sweep first")
    all_rows = [row for settings in groups.values() for seeds in settings.values() for _, rows in seeds for row in rows]
    metrics = _metric_columns(all_rows)
    records, selected = [], []
    for (dataset, algorithm), settings in groups.items():
        data = next(iter(settings.values()))[0][0].config.data
        for rule in rules:
            candidates = settings if selection.get_rule(rule).score_key is not None else {0: settings.get(0, [])}
            candidates = {index: seeds for index, seeds in candidates.items() if seeds}
            if not candidates:
                notes.append(f"{dataset}/{algorithm}: {rule} reports the default setting, which has no finished run")
                continue
            try:  # never the untrained network, and for staged methods (JTT) their last stage only
                chosen = selection.select_hyperparameters(
                    {
                        index: [selection.candidate_rows(rows) for _, rows in seeds]
                        for index, seeds in candidates.items()
                    },
                    rule,
                )
            except ValueError as error:
                notes.append(f"{dataset}/{algorithm}: rule {rule} skipped: {error}")
                continue
            chosen_runs = [run for run, _ in candidates[chosen.key]]
            record: dict[str, Any] = {
                "dataset": dataset,
                "algorithm": algorithm,
                "rule": rule,
                "oracle": selection.get_rule(rule).uses_test,
                "hparams": chosen_runs[0].hparams_label,
                "seeds": len(chosen.rows),
                "candidates": chosen.candidates,
                "validation score": chosen.validation_score if selection.get_rule(rule).score_key else float("nan"),
            }
            for metric in metrics:
                values = [100.0 * float(row[metric]) for row in chosen.rows if row.get(metric) is not None]
                record[f"{metric} mean"], record[f"{metric} std"] = selection.mean_std(values)
                paper = paper_number(dataset, chosen_runs[0].config.algorithm, metric, data)
                if paper is not None:
                    record[f"{metric} paper"] = paper[0]
                    record[f"{metric} paper std"] = paper[1] if paper[1] is not None else float("nan")
                    diff = difference_in_std(record[f"{metric} mean"], paper)
                    record[f"{metric} Δ/σ"] = float("nan") if diff is None else diff
            records.append(record)
            selected.append(
                {
                    "dataset": dataset,
                    "algorithm": algorithm,
                    "rule": rule,
                    "hparams_index": chosen.key,
                    "hparams": dict(chosen_runs[0].config.hparams),
                    "runs": [run.folder_name for run in chosen_runs],
                    "steps": [row["step"] for row in chosen.rows],
                    "validation_score": chosen.validation_score if selection.get_rule(rule).score_key else None,
                }
            )
    if not records:
        raise ValueError(
            f"no table for rule(s) {', '.join(rules)}: "
            + "; ".join(notes)
            + ". Rules that select on 'val' need a validation split: launch with e.g. --data val_fraction=0.1, "
            "or collect with --rule last_step"
        )
    if any(selection.get_rule(rule).uses_test for rule in rules):
        notes.append("test_domain_oracle selects on the test split: an oracle, not an honest estimate")
    results = SweepResults(pd.DataFrame.from_records(records), metrics, selected, notes)
    results.files = write_results(results, Path(out_dir) if out_dir is not None else sweep_dir / RESULTS_DIR)
    return results


def write_results(results: SweepResults, out_dir: Path) -> list[Path]:
    """Write ``results.csv`` (every number), ``results.md`` and ``results.tex`` (one table per rule) and
    ``selected.json`` (the chosen hyperparameters, runs and steps) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("results.csv", "results.md", "results.tex", "selected.json")]
    results.table.to_csv(paths[0], index=False)
    tables = results.display_tables()
    notes = "".join(f"- {note}\n" for note in results.notes)
    paths[1].write_text(
        "".join(f"## {title}\n\n{markdown_table(table)}\n" for title, table in tables.items())
        + (f"Notes:\n\n{notes}" if notes else "")
    )
    paths[2].write_text("\n".join(latex_table(table, caption=title) for title, table in tables.items()))
    paths[3].write_text(json.dumps(results.selected, indent=2, default=str) + "\n")
    return paths

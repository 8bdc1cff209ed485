"""Running Table 2: the search and the final seeds through the one sweep, and hyperparameter selection on the
search seed's validation data only (:func:`choose_settings`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradstarve.experiments import selection, sweep
from gradstarve.experiments.reproduce.base import DataMissingError
from gradstarve.experiments.reproduce.celeba.plan import (
    _COMMON_KEYS,
    _METHOD_KEYS,
    ALGORITHM_OF,
    GROUP_NAMES,
    LABELS,
    SEARCH_RULE,
    SEARCHED_METHODS,
    CelebASetup,
    final_spec,
    search_spec,
)
from gradstarve.experiments.runs import inspect_run, nonfinite_metrics
from gradstarve.experiments.tasks import Task, load_task


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------
@dataclass
class CelebARuns:
    """The runs of a set-up: metrics rows and run folder per finished final ``(method, seed)``, the final runs not
    finished (``missing``), steps per epoch and in all per method, group counts per split, the search's rows
    (:func:`choose_settings`) and the hyperparameters of each method's final runs (``chosen``)."""

    setup: CelebASetup
    metrics: dict[tuple[str, int], list[dict[str, Any]]]
    run_dirs: dict[tuple[str, int], Path]
    steps_per_epoch: dict[str, int]
    total_steps: dict[str, int]
    group_counts: dict[str, dict[str, int]]
    missing: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0
    search: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load_celeba_task(setup: CelebASetup, data_root: Path | str | None = None, progress: bool = False) -> Task:
    """The celeba task of ``setup``; raises :class:`DataMissingError` when no CelebA is found under ``data_root``."""
    from gradstarve.data.errors import MissingDataError

    options = {**setup.data_options(), "data_root": data_root, "progress": progress}
    try:
        return load_task("celeba", options, seed=0)
    except (MissingDataError, FileNotFoundError) as error:
        raise DataMissingError(
            f"CelebA is not available: {error} (give the folder with --data-root; e.g. --data-root ../shared/data)"
        ) from error


def _inspect(run: sweep.PlannedRun, runs_dir: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """A planned run's rows if finished, intact and finite, else ``None``; and its state in words."""
    inspection = inspect_run(Path(runs_dir) / run.folder_name, run.config)
    nonfinite = nonfinite_metrics(inspection.rows)
    if inspection.finished and not nonfinite:
        return inspection.rows, f"done, step {inspection.rows[-1]['step']}"
    if inspection.state == "damaged":
        return None, f"DAMAGED, not counted ({inspection.problem})"
    if nonfinite:
        return None, f"diverged (non-finite {', '.join(nonfinite[:3])}), not counted"
    if inspection.rows:
        return None, f"unfinished at step {inspection.rows[-1]['step']}, not counted"
    return None, "not started"


def _own_keys(method: str) -> tuple[str, ...]:
    return (*_COMMON_KEYS, "epochs", *_METHOD_KEYS.get(ALGORITHM_OF.get(method, method), ()))


def choose_settings(
    setup: CelebASetup, runs: Sequence[sweep.PlannedRun], runs_dir: Path
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Hyperparameter selection on the search seed's *validation* data: per method, the setting whose evaluation
    picked by :data:`SEARCH_RULE` (among :func:`~gradstarve.experiments.selection.candidate_rows`) has the best
    validation worst-group accuracy. A method is chosen only once all its settings have finished.

    Returns ``(chosen, rows, problems)``: method -> complete hyperparameters; one row per (method, setting) with
    the setting's own hyperparameters, its validation worst-group and average accuracy at the picked evaluation,
    its state and whether it was chosen; and one line per run that is damaged or diverged.
    """
    by_method: dict[str, list[tuple[sweep.PlannedRun, list[dict[str, Any]] | None, str]]] = {}
    problems = []
    for run in runs:
        rows, state = _inspect(run, runs_dir)
        if state.startswith(("DAMAGED", "diverged")):
            problems.append(f"{LABELS[run.method]} search setting {run.hparams_index}: {state} ({run.folder_name})")
        by_method.setdefault(run.method, []).append((run, rows, state))
    chosen: dict[str, dict[str, Any]] = {}
    table: list[dict[str, Any]] = []
    for method, entries in by_method.items():
        scores = {}
        for run, rows, _ in entries:
            candidates = selection.candidate_rows(rows) if rows else []
            if candidates:
                picked = selection.select_step(candidates, SEARCH_RULE)
                scores[run.hparams_index] = (
                    float(picked["val/worst_group_accuracy"]),
                    float(picked["val/accuracy"]),
                    picked["step"],
                )
        complete = all(rows is not None for _, rows, _ in entries)
        best = max(scores, key=lambda index: scores[index][0]) if complete and scores else None
        for run, _, state in entries:
            score = scores.get(run.hparams_index)
            line: dict[str, Any] = {"method": method, "setting": run.hparams_label}
            line.update({k: run.config.hparams[k] for k in _own_keys(method) if k in run.config.hparams})
            line["val_worst_group"] = 100 * score[0] if score else None
            line["val_average"] = 100 * score[1] if score else None
            line["step"] = score[2] if score else None
            line["state"] = state
            line["chosen"] = run.hparams_index == best
            table.append(line)
            if run.hparams_index == best:
                chosen[method] = dict(run.config.hparams)
    return chosen, table, problems


def run_celeba(
    setup: CelebASetup,
    runs_dir: Path | str,
    *,
    data_root: Path | str | None = None,
    device: str = "cpu",
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    task: Task | None = None,
    report_only: bool = False,
    specs_dir: Path | str | None = None,
    workers: int = 0,
    threads_per_run: int | None = None,
    tensorboard: bool = False,
) -> CelebARuns:
    """The search, then the final seeds of every chosen setting, through :func:`gradstarve.experiments.sweep.launch`
    into ``runs_dir`` (finished runs are skipped, killed ones resumed).

    Args:
        progress: show decoding progress when the image cache is built.
        report: called with one line of text per final run.
        task: an already loaded celeba task (else :func:`load_celeba_task`; only its sizes and counts are read).
        report_only: train nothing; read the runs already in ``runs_dir`` (the others are named, never counted).
        specs_dir: where the two sweep specs are written (``search/spec.json``, ``final/spec.json``); default the
            parent of ``runs_dir``.
        workers, threads_per_run: the sweep's local backend (``workers=0``: one run at a time in this process).
    """
    start = time.perf_counter()
    setup = setup.resolved()
    runs_dir = Path(runs_dir).absolute()
    specs_dir = Path(specs_dir) if specs_dir is not None else runs_dir.parent
    if task is None:
        task = load_celeba_task(setup, data_root, progress=progress)
    n_train = len(task.train)

    def launch(name: str, spec: sweep.SweepSpec) -> None:
        if report_only:
            return
        summary = sweep.launch(
            specs_dir / name,
            spec,
            runs_dir=runs_dir,
            workers=workers,
            threads_per_run=threads_per_run,
            data_root=data_root,
            device=device,
            tensorboard=tensorboard,
        )
        for outcome in summary.failed:
            if report is not None:
                report(f"{name} run {outcome.folder_name} {outcome.state}: {outcome.error}")

    search = search_spec(setup, n_train)
    launch("search", search)
    chosen, search_rows, problems = choose_settings(setup, sweep.plan(search), runs_dir)
    metrics_by_run: dict[tuple[str, int], list[dict[str, Any]]] = {}
    run_dirs: dict[tuple[str, int], Path] = {}
    steps_per_epoch: dict[str, int] = {}
    total: dict[str, int] = {}
    missing: list[tuple[str, int]] = []
    planned = []
    if chosen:
        final = final_spec(setup, chosen, n_train)
        launch("final", final)
        planned = sweep.plan(final)
        chosen = {run.method: dict(run.config.hparams) for run in planned}  # sd_margin included
    for run in planned:
        method, seed = run.method, run.config.seed
        steps_per_epoch[method] = math.ceil(n_train / int(run.config.hparams["batch_size"]))
        total[method] = int(run.config.hparams["epochs"]) * steps_per_epoch[method]
        rows, state = _inspect(run, runs_dir)
        if rows is not None:
            metrics_by_run[(method, seed)] = rows
            run_dirs[(method, seed)] = runs_dir / run.folder_name
        else:
            missing.append((method, seed))
            if state.startswith(("DAMAGED", "diverged")):
                problems.append(f"{LABELS[method]} seed {seed}: {state} ({run.folder_name})")
        if report is not None:
            report(f"{LABELS[method]} seed {seed}: {state} -> {runs_dir / run.folder_name}")
    unchosen = [m for m in setup.methods if m in SEARCHED_METHODS and m not in chosen]
    missing += [(m, s) for m in unchosen for s in setup.seeds]
    counts = {
        name: dict(zip(GROUP_NAMES, split.group_counts().tolist(), strict=True))
        for name, split in task.evaluation.items()
    }
    seconds = time.perf_counter() - start
    return CelebARuns(
        setup, metrics_by_run, run_dirs, steps_per_epoch, total, counts, missing, seconds, search_rows, chosen, problems
    )

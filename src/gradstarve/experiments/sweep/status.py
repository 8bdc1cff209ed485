"""Where a sweep stands: the state of each planned run's folder (done, running, killed, damaged, not started) and
removing the incomplete ones."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from gradstarve.experiments.execute import (
    ERROR_FILE,
    PlannedRun,
    RunBusyError,
    is_running,
    run_lock,
)
from gradstarve.experiments.runs import (
    DamagedRunError,
    is_done,
    read_metrics,
)
from gradstarve.experiments.sweep.planning import plan
from gradstarve.experiments.sweep.spec import open_spec, runs_root

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

"""Hand-written sweep folders: a spec and finished runs whose metrics rows the test chooses (no training)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gradstarve.experiments import sweep


def write_run(runs_dir: Path, run: sweep.PlannedRun, rows: Sequence[Mapping[str, Any]]) -> Path:
    """A finished run folder as train() leaves it: config.json, metrics.jsonl and done."""
    run_dir = runs_dir / run.folder_name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(run.config.identity(), sort_keys=True, indent=2) + "\n")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(dict(row)) + "\n" for row in rows))
    (run_dir / "done").write_text(json.dumps({"steps": rows[-1]["step"], "final": dict(rows[-1])}) + "\n")
    return run_dir


def hand_written_sweep(
    sweep_dir: Path, spec: sweep.SweepSpec, rows_of: Callable[[sweep.PlannedRun], Sequence[Mapping[str, Any]]]
) -> list[sweep.PlannedRun]:
    """Save ``spec`` in ``sweep_dir`` and write every planned run with ``rows_of(run)`` as its metrics."""
    sweep.save_spec(sweep_dir, spec)
    runs = sweep.plan(spec)
    for run in runs:
        write_run(sweep.runs_root(sweep_dir), run, rows_of(run))
    return runs

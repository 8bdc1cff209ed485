"""Benchmark (issue 9, not a test): sweep throughput, local process pool vs Ray Tune, and `reproduce --quick` time.

A sweep of ``--runs`` tiny runs (synthetic task, ERM, one seed each, ``--steps`` full-batch steps) is launched into a
fresh folder three ways: in this process one after the other (``workers=0``, the baseline with no scheduling), on
the local pool (``--workers`` processes) and on Ray Tune (a local Ray instance with ``--workers`` CPUs, started
by the launch, start-up included). For each: wall time, runs per minute, the time spent inside the runs
(``run_one``: loading the task and training), and the scheduling overhead per run,
``(wall - inside / workers) / runs``: what each run costs beyond its own work (process or Ray start-up, imports,
dispatch, bookkeeping). ``--reproduce`` also times ``gradstarve reproduce --quick`` (no data: the data sets are
skipped) in a subprocess.

Usage: ``python benchmarks/sweep.py [--runs 20] [--steps 20] [--workers 2] [--no-ray] [--reproduce]
[--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradstarve.experiments import sweep


def measure(backend: str, workers: int, runs: int, steps: int, folder: Path) -> dict:
    spec = sweep.SweepSpec(("synthetic",), ("erm",), tuple(range(runs)), steps=steps, eval_every=max(1, steps // 2))
    first_start: list[float] = []

    def on_event(event: sweep.RunEvent) -> None:
        if event.kind == "started" and not first_start:
            first_start.append(time.perf_counter())

    start = time.perf_counter()
    summary = sweep.launch(folder, spec, backend=backend, workers=workers, threads_per_run=1, on_event=on_event)
    wall = time.perf_counter() - start
    if summary.count("done") != runs:
        raise RuntimeError(f"{backend}: {summary.count('done')} of {runs} runs finished: {summary.failed}")
    inside = sum(outcome.seconds for outcome in summary.outcomes)
    parallel = max(1, workers)
    return {
        "backend": backend if workers else "in-process",
        "workers": workers,
        "runs": runs,
        "wall_s": wall,
        "runs_per_minute": 60.0 * runs / wall,
        "inside_runs_s": inside,
        "mean_run_s": inside / runs,
        "first_run_started_after_s": (first_start[0] - start) if first_start else None,
        "overhead_per_run_s": (wall - inside / parallel) / runs,
    }


def time_reproduce_quick(out: Path) -> dict:
    start = time.perf_counter()
    empty = out / "no-data"
    empty.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "gradstarve.cli", "reproduce", "--quick", "--out", str(out / "reproduce")]
    completed = subprocess.run([*command, "--data-root", str(empty)], capture_output=True, text=True, check=False)
    return {
        "command": "gradstarve reproduce --quick (no data)",
        "wall_s": time.perf_counter() - start,
        "exit_code": completed.returncode,
        "output_tail": completed.stdout[-2000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    parser.add_argument("--reproduce", action="store_true", help="also time gradstarve reproduce --quick")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as scratch:
        cases = [("local", 0), ("local", args.workers)] + ([] if args.no_ray else [("ray", args.workers)])
        results["sweeps"] = []
        for backend, workers in cases:
            row = measure(backend, workers, args.runs, args.steps, Path(scratch) / f"{backend}-{workers}")
            results["sweeps"].append(row)
            print(
                f"{row['backend']:>10} x{workers}: {row['wall_s']:6.1f} s, {row['runs_per_minute']:6.1f} runs/min, "
                f"{row['mean_run_s']:.2f} s inside a run, overhead {row['overhead_per_run_s']:.2f} s/run, "
                f"first run started after {row['first_run_started_after_s']:.1f} s",
                flush=True,
            )
        if args.reproduce:
            results["reproduce_quick"] = time_reproduce_quick(Path(scratch))
            print(f"reproduce --quick: {results['reproduce_quick']['wall_s']:.0f} s", flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'sweep.json'}")


if __name__ == "__main__":  # the local backend spawns workers, which import this file as __mp_main__
    main()

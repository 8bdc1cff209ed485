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
every trial seed, so a setting's seeds can be averaged; where draws repeat an earlier setting (a small discrete space),
draws ``n_hparams + 1, ...`` that are new (with the overrides applied) are added until there are ``n_hparams + 1``
settings. ``overrides`` (and ``steps``) apply to every setting.

Launching (:func:`launch`) skips finished runs (a ``done`` marker), resumes a run killed mid-way from its last
checkpoint (train.py drops any metrics line newer than the checkpoint, so no line is ever duplicated), and holds an
exclusive lock on each run folder while it trains (``fcntl.flock`` on ``<run>/.lock``; released by the kernel when a
process dies), so two launches of one sweep never train the same run at once. Backends:

* ``local``: a pool of ``workers`` long-lived worker processes (``spawn``;
  :mod:`gradstarve.experiments.sweep.backends.local`), each training one run at a time with ``cpus // workers`` torch
  threads (``workers=0``: one by one in this process). A run that raises, or a worker that dies (segfault, out of
  memory), fails only that run: the error goes to ``<run>/error.txt`` and a fresh worker takes the next run.
  Workers die with the launcher (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread), so a killed launch leaves
  nothing running.
* ``ray``: Ray Tune, one trial per run, each calling :func:`run_one` (hence ``train``) and writing the same run
  folders (:mod:`gradstarve.experiments.sweep.backends.ray`).

:func:`collect` applies every model-selection rule of :mod:`gradstarve.experiments.selection` to the finished runs
and writes mean ± std tables (over seeds, ddof = 0 as the paper) per (dataset, algorithm) and rule, with the paper's
numbers (:mod:`gradstarve.experiments.reproduce.paper_numbers`) and the differences in the paper's std units in
adjacent columns."""

from __future__ import annotations

# The executing leaf's names, as the launcher's public face (specs and recipes plan PlannedRuns, tests lock runs).
from gradstarve.experiments.execute import PlannedRun, RunBusyError, RunEvent, RunOutcome, run_lock, run_one
from gradstarve.experiments.sweep.collect import SweepResults, collect, write_results
from gradstarve.experiments.sweep.launcher import LaunchSummary, default_workers, launch
from gradstarve.experiments.sweep.planning import draw_seed, plan
from gradstarve.experiments.sweep.spec import (
    BACKENDS,
    RESULTS_DIR,
    RUNS_DIR,
    SPEC_FILE,
    SweepSpec,
    load_spec,
    open_spec,
    runs_root,
    save_spec,
)
from gradstarve.experiments.sweep.status import RUN_STATES, RunStatus, delete_incomplete, run_status, sweep_status

__all__ = [
    "BACKENDS",
    "RESULTS_DIR",
    "RUNS_DIR",
    "RUN_STATES",
    "SPEC_FILE",
    "LaunchSummary",
    "PlannedRun",
    "RunBusyError",
    "RunEvent",
    "RunOutcome",
    "RunStatus",
    "SweepResults",
    "SweepSpec",
    "collect",
    "default_workers",
    "delete_incomplete",
    "draw_seed",
    "launch",
    "load_spec",
    "open_spec",
    "plan",
    "run_lock",
    "run_one",
    "run_status",
    "runs_root",
    "save_spec",
    "sweep_status",
    "write_results",
]

"""The local backend of :func:`gradstarve.experiments.sweep.launch`: a pool of long-lived worker processes.

``workers`` processes each train one run at a time through :func:`gradstarve.experiments.sweep.run_one`, with
``threads`` torch threads. They are forked from a ``forkserver`` that has imported torch and gradstarve once (and
has run no computation, so no thread pool is copied half-initialised), so a worker starts in a fraction of a
second instead of paying Python + torch start-up (seconds on 2 cores); where ``forkserver`` does not exist
(Windows) they are ``spawn`` ed. Plain ``fork`` of the launcher is never used: it would copy thread pools in use.
Consecutive runs on the same data (same dataset, options and seed) reuse the loaded task.

The launcher talks to each worker over its own pipe and watches its process sentinel, so it always knows which run
a worker holds: a run that raises is reported by the worker and the worker goes on; a worker that dies (segfault,
out-of-memory kill) fails only the run it held (``<run>/error.txt`` says so) and a new worker takes the next run.
Workers die with the launcher, even when it is killed with SIGKILL: the forkserver exits when the launcher's end of
its pipe closes, the workers have ``PR_SET_PDEATHSIG`` set (Linux), and a watchdog thread in each worker exits when
the launcher's pid is gone or the worker is re-parented. The run folders' locks make a relaunch wait for a dying
worker rather than train the same run twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from gradstarve.experiments.execute import ERROR_FILE, EventHandler, PlannedRun, RunEvent, RunOutcome, run_one
from gradstarve.experiments.train import is_done

#: How often a worker checks that its launcher is alive: the longest a worker trains on after the launcher's death.
WATCHDOG_SECONDS = 0.2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_with_parent(launcher_pid: int) -> None:
    """Make this worker die when the launcher dies, even by SIGKILL (then nothing can tell the worker)."""
    parent = os.getppid()  # the forkserver, or the launcher itself under spawn
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if not _alive(launcher_pid):  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:  # the launcher is gone, or this worker was re-parented (the forkserver exits later)
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent or not _alive(launcher_pid):
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _send(conn: Any, event: RunEvent) -> None:
    """Send ``event`` to the launcher, or stop this worker at once if the launcher is gone: raising instead (e.g.
    from inside a run's progress callback) would record the run as failed when it was only interrupted."""
    try:
        conn.send(event)
    except (BrokenPipeError, EOFError, OSError):
        os._exit(1)


def _worker_main(
    conn: Any,
    launcher_pid: int,
    threads: int,
    data_root: str | None,
    device: str,
    timeout: float,
    tensorboard: bool = False,
) -> None:
    """A worker process: receives ``(config, runs_dir)``, sends events, until it receives ``None``."""
    _exit_with_parent(launcher_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle: it stops the workers
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
    from gradstarve.experiments.tasks import load_task

    cached: tuple[Any, Any] | None = None  # (key, task): consecutive runs on the same data skip reloading it
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the launcher is gone
            os._exit(1)
        if message is None:
            return
        config, runs_dir = message
        name = config.folder_name()
        _send(conn, RunEvent("started", name))
        key = (config.dataset, json.dumps(dict(config.data), sort_keys=True, default=str), config.seed, data_root)
        task = None
        if not is_done(Path(runs_dir) / name):
            try:
                if cached is None or cached[0] != key:
                    cached = None  # free the old data first
                    options = {**config.data, **({"data_root": data_root} if data_root else {})}
                    cached = (key, load_task(config.dataset, options, config.seed))
                task = cached[1]
            except Exception:  # run_one loads it again and reports the error in the run folder
                task = None
        last = [0.0]

        def progress(step: int, total: int, name: str = name, last: list[float] = last) -> None:
            now = time.monotonic()
            if now - last[0] > 0.25 or step == total:
                last[0] = now
                _send(conn, RunEvent("progress", name, step, total))

        outcome = run_one(
            config,
            runs_dir,
            data_root=data_root,
            device=device,
            task=task,
            on_progress=progress,
            lock_timeout=timeout,
            tensorboard=tensorboard,
        )
        _send(conn, RunEvent("finished", name, outcome=outcome))


#: Imported once by the forkserver, so that forked workers start with them: gradstarve's training stack, and
#: torch._dynamo, which torch imports at the first optimiser (seconds).
FORKSERVER_PRELOAD = ["gradstarve.experiments.sweep.backends.local", "torch._dynamo"]


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORKSERVER_PRELOAD)  # takes effect when the forkserver starts (once)
        return context
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: Any
    conn: Any
    run: PlannedRun | None = None


def launch_local(
    runs: Sequence[PlannedRun],
    root: Path,
    workers: int,
    threads: int,
    data_root: str | None,
    device: str,
    on_event: EventHandler | None,
    lock_timeout: float,
    tensorboard: bool = False,
) -> list[RunOutcome]:
    """Train ``runs`` into ``root`` with ``workers`` processes; return each run's outcome in order (a run whose
    outcome never arrived, after an interruption, is left out)."""
    context = _context()
    pending = list(runs)
    outcomes: dict[str, RunOutcome] = {}
    pool: list[_Worker] = []

    def spawn() -> _Worker:
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_worker_main,
            args=(child_end, os.getpid(), threads, data_root, device, lock_timeout, tensorboard),
            daemon=True,
            name="gradstarve-sweep-worker",
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def finish(worker: _Worker, outcome: RunOutcome) -> None:
        outcomes[outcome.folder_name] = outcome
        worker.run = None
        if on_event is not None:
            on_event(RunEvent("finished", outcome.folder_name, outcome=outcome))

    try:
        pool = [spawn() for _ in range(min(workers, len(pending)))]
        while pending or any(worker.run is not None for worker in pool):
            for worker in pool:
                if worker.run is None and pending:
                    worker.run = pending.pop(0)
                    worker.conn.send((worker.run.config, str(root)))
            ready = wait([w.conn for w in pool] + [w.process.sentinel for w in pool], timeout=1.0)
            for worker in list(pool):
                dead = worker.process.sentinel in ready
                if worker.conn in ready or dead:
                    try:
                        while worker.conn.poll():
                            event: RunEvent = worker.conn.recv()
                            if event.kind == "finished" and event.outcome is not None:
                                finish(worker, event.outcome)
                            elif on_event is not None:
                                on_event(event)
                    except (EOFError, OSError):  # the worker's end closed: it died
                        dead = True
                if not dead:
                    continue
                worker.process.join(timeout=5)
                if worker.run is not None:
                    error = f"the worker process died (exit code {worker.process.exitcode}) while training this run"
                    run_dir = root / worker.run.folder_name
                    with contextlib.suppress(OSError):
                        run_dir.mkdir(parents=True, exist_ok=True)
                        (run_dir / ERROR_FILE).write_text(error + "\n")
                    finish(worker, RunOutcome(worker.run.folder_name, "failed", 0.0, error))
                pool.remove(worker)
                if pending:
                    pool.append(spawn())
    finally:
        for worker in pool:
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.conn.send(None)
        for worker in pool:
            worker.process.join(timeout=5)
            if worker.process.is_alive():  # interrupted mid-run: the checkpoint lets the next launch resume
                worker.process.kill()
                worker.process.join()
    return [outcomes[run.folder_name] for run in runs if run.folder_name in outcomes]

"""Executing one run of a sweep, as every backend does: the run folder's lock, :func:`run_one`, and the events
backends send. A leaf module: the launcher (:mod:`gradstarve.experiments.sweep`) and its backends
(:mod:`~gradstarve.experiments.sweep.backends.local`, :mod:`~gradstarve.experiments.sweep.backends.ray`) import
it; it imports none of them, so there is no import cycle.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradstarve.experiments.train import RunConfig, check_run_folder, is_done

LOCK_FILE = ".lock"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class PlannedRun:
    """A run of a sweep: its config and which hyperparameter setting it uses (0 = defaults, i = draw i)."""

    config: RunConfig
    hparams_index: int
    method: str | None = None
    setting: str | None = None

    def __post_init__(self) -> None:
        if self.method is None:
            object.__setattr__(self, "method", self.config.algorithm)

    @property
    def folder_name(self) -> str:
        return self.config.folder_name()

    @property
    def hparams_label(self) -> str:
        if self.setting is not None:
            return self.setting
        return "default" if self.hparams_index == 0 else f"draw {self.hparams_index}"


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A JSON-ready dict of every field of ``config`` (data locations included), for :func:`config_from_dict`."""
    values = asdict(config)
    values["hparams"] = dict(config.hparams)
    values["data"] = dict(config.data)
    values["eval_splits"] = list(config.eval_splits) if config.eval_splits is not None else None
    return values


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """The inverse of :func:`config_to_dict` (also reads a run folder's ``config.json``)."""
    values = {k: v for k, v in values.items() if k != "trainer_version"}
    if values.get("eval_splits") is not None:
        values["eval_splits"] = tuple(values["eval_splits"])
    return RunConfig(**values)


# --------------------------------------------------------------------------------------------------------------
# Locks: one process trains a run folder at a time
# --------------------------------------------------------------------------------------------------------------
class RunBusyError(RuntimeError):
    """Another process holds the run folder's lock (it is training that run)."""


@contextlib.contextmanager
def run_lock(run_dir: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if needed), waiting up to ``timeout`` seconds for it.

    POSIX ``flock``: the kernel releases it when the holder dies, so a killed run never leaves a stale lock.
    Without ``fcntl`` (Windows) this does not lock.
    """
    try:
        import fcntl
    except ModuleNotFoundError:  # pragma: no cover - Windows
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = (run_dir / LOCK_FILE).open("a")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunBusyError(f"{run_dir} is being trained by another process") from None
                time.sleep(0.1)
        yield
    finally:
        handle.close()


def is_running(run_dir: Path) -> bool:
    """Whether some process holds ``run_dir``'s lock right now."""
    if not (run_dir / LOCK_FILE).exists():
        return False
    try:
        with run_lock(run_dir):
            return False
    except RunBusyError:
        return True


# --------------------------------------------------------------------------------------------------------------
# One run, as every backend runs it
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in a launch: ``state`` is ``"done"`` (trained to the end now), ``"skipped"``
    (already done), ``"busy"`` (another process is training it) or ``"failed"`` (``error`` says why)."""

    folder_name: str
    state: str
    seconds: float = 0.0
    error: str | None = None


def run_one(
    config: RunConfig,
    runs_dir: Path | str,
    *,
    data_root: Path | str | None = None,
    device: str = "cpu",
    task: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
    lock_timeout: float = 10.0,
    tensorboard: bool = False,
) -> RunOutcome:
    """Train ``config`` into ``runs_dir`` under the run folder's lock; never raises for a failing run.

    ``on_progress(step, total)`` is called after every training step. ``lock_timeout``: how long to wait for a
    process still holding the lock (e.g. a worker of a launch that was just killed) before reporting ``"busy"``.
    A failure's traceback is written to ``<run>/error.txt`` (removed when the run is tried again).
    """
    from gradstarve.experiments.tasks import load_task
    from gradstarve.experiments.train import total_steps, train

    start = time.perf_counter()
    run_dir = Path(runs_dir) / config.folder_name()
    try:
        check_run_folder(run_dir, config)
    except ValueError as error:  # another run's folder: leave it untouched
        return RunOutcome(run_dir.name, "failed", 0.0, str(error))
    if is_done(run_dir):
        return RunOutcome(run_dir.name, "skipped")
    try:
        with run_lock(run_dir, lock_timeout):
            if is_done(run_dir):  # finished by the process we waited for
                return RunOutcome(run_dir.name, "skipped")
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            if task is None:
                options = dict(config.data)
                if data_root is not None:
                    options["data_root"] = data_root
                task = load_task(config.dataset, options, config.seed)
            callbacks = []
            if on_progress is not None:
                total = total_steps(config.hparams, len(task.train))
                callbacks.append(lambda step, _algorithm: on_progress(step, total))
            result = train(
                config,
                runs_dir,
                data_root=data_root,
                device=device,
                task=task,
                callbacks=callbacks,
                tensorboard=tensorboard,
            )
            if not is_done(result.run_dir):
                raise RuntimeError("training returned before the last step")
    except RunBusyError as error:
        return RunOutcome(run_dir.name, "busy", time.perf_counter() - start, str(error))
    except Exception as error:  # a failing run must not stop the sweep; the traceback is kept in the run folder
        text = traceback.format_exc()
        with contextlib.suppress(OSError):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / ERROR_FILE).write_text(text)
        return RunOutcome(run_dir.name, "failed", time.perf_counter() - start, f"{type(error).__name__}: {error}")
    return RunOutcome(run_dir.name, "done", time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
# Launch events (for progress displays)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunEvent:
    """A backend's news about a run: ``kind`` is ``"started"``, ``"progress"`` (``step`` of ``total``) or
    ``"finished"`` (``outcome`` set)."""

    kind: str
    folder_name: str
    step: int = 0
    total: int = 0
    outcome: RunOutcome | None = None


EventHandler = Callable[[RunEvent], None]

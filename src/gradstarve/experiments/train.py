"""One training run: (dataset, algorithm, hyperparameters, seed) -> a run folder. The project's training loop; the
run folder itself (config, identity, metrics, checkpoints, checks) is :mod:`gradstarve.experiments.runs`.

A run folder holds:

* ``config.json``: the :class:`RunConfig` (what defines the run; its hash names the folder);
* ``metrics.jsonl``: one JSON line per evaluation step, append-only: ``step``, ``seconds``, the mean of the
  algorithm's logged values since the previous evaluation (``train/loss``, ``train/nll``, ``train/penalty``, ...),
  and per evaluated split ``<split>/accuracy``, ``/nll``, ``/entropy``, ``/worst_group_accuracy``,
  ``/group_accuracy`` and ``/group_count`` (lists over the split's groups);
* ``checkpoint.pt``: the algorithm (model, optimisers, step counter, method state) and the sampler's state, written
  atomically after every evaluation, with a SHA-256 of its bytes, and read with ``weights_only=True`` (tensors and
  plain containers only: a run folder can never make us execute code);
* ``data.json``: the fingerprint of the data the run trained on (a folder is never reused for other data);
* ``done``: written last, with the run's summary and the SHA-256 of ``metrics.jsonl``; a folder with ``done`` is
  finished and is never run again.

Run folders are untrusted input (they are shared and copied): :func:`inspect_run` checks one before its numbers
are used, and a damaged checkpoint or metrics file is set aside and the run restarted from step 0 with a
:class:`RunRestartedWarning`, never resumed silently.

Resuming: if ``checkpoint.pt`` exists the run continues from it, after dropping any ``metrics.jsonl`` line newer
than the checkpoint (written by a run killed between its metrics line and its checkpoint), so every evaluation step
appears exactly once whatever happens. Given the same config, a resumed run gives the same numbers as an
uninterrupted one (same checkpointed random states).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradstarve import metrics
from gradstarve.algorithms import build_algorithm
from gradstarve.algorithms.base import Algorithm
from gradstarve.analysis import FeatureTracker
from gradstarve.data.base import LabelledData
from gradstarve.devices import resolve_device

# The run folder's names, importable from here as before this module was split in two.
from gradstarve.experiments.runs import (  # noqa: F401
    CHECKPOINT_MAGIC,
    DATA_FILE,
    PRECISIONS,
    TRAINER_VERSION,
    DamagedRunError,
    RunConfig,
    RunInspection,
    RunRestartedWarning,
    ScheduleNeverSwitchesWarning,
    atomic_write,
    check_data_fingerprint,
    check_run_folder,
    file_sha256,
    inspect_run,
    is_done,
    json_default,
    load_checkpoint,
    make_config,
    nonfinite_metrics,
    read_metrics,
    save_checkpoint,
    set_aside_and_restart,
    truncate_metrics,
)
from gradstarve.experiments.tasks import Task, data_fingerprint, load_task


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    algorithm: Algorithm, x: torch.Tensor, batch_size: int = 4096, device: torch.device | None = None
) -> torch.Tensor:
    """Logits of the algorithm's model on ``x`` in eval mode, in batches (float32 on the CPU)."""
    was_training = algorithm.training
    algorithm.eval()
    try:
        outputs = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size]
            outputs.append(algorithm.predict(batch.to(device) if device is not None else batch).float().cpu())
        return torch.cat(outputs)
    finally:
        algorithm.train(was_training)


def evaluate_split(logits: torch.Tensor, split: LabelledData) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, mean predictive entropy (binary) and per-group accuracies of ``logits``."""
    y = split.y
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim == 1:
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
        entropy = metrics.mean_binary_entropy(logits)
    else:
        nll = torch.nn.functional.cross_entropy(logits, y)
        entropy = float("nan")
    group_accuracy, group_count = metrics.group_accuracies(logits, y, split.group, split.n_groups)
    present = group_count > 0
    return {
        "accuracy": metrics.accuracy(logits, y),
        "nll": float(nll),
        "entropy": entropy,
        "worst_group_accuracy": float(np.min(group_accuracy[present])),
        "group_accuracy": [None if not c else float(a) for a, c in zip(group_accuracy, group_count, strict=True)],
        "group_count": group_count.tolist(),
    }


# --------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------
class BatchSampler:
    """Full batches, or shuffled mini-batches drawn epoch by epoch from a seeded generator; its state checkpoints."""

    def __init__(self, n: int, batch_size: int | None, generator: torch.Generator) -> None:
        self.n = n
        self.batch_size = None if batch_size is None or batch_size >= n else int(batch_size)
        self.generator = generator
        self.order = torch.arange(n)
        self.position = n  # an epoch starts at the first draw

    @property
    def steps_per_epoch(self) -> int:
        return 1 if self.batch_size is None else math.ceil(self.n / self.batch_size)

    def next(self) -> torch.Tensor | None:
        """Indices of the next batch (``None`` for the full batch)."""
        if self.batch_size is None:
            return None
        if self.position >= self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.order, self.position = state["order"], int(state["position"])
        self.generator.set_state(state["generator"])


def total_steps(hparams: Mapping[str, Any], n_train: int) -> int:
    """``hparams["steps"]``, or ``hparams["epochs"]`` epochs of ``batch_size`` batches."""
    if "steps" in hparams:
        return int(hparams["steps"])
    if "epochs" in hparams:
        batch = hparams.get("batch_size")
        per_epoch = 1 if batch is None else math.ceil(n_train / int(batch))
        return int(hparams["epochs"]) * per_epoch
    raise ValueError("hparams must give 'steps' or 'epochs'")


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_dir: Path
    config: RunConfig
    metrics: list[dict[str, Any]]
    skipped: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


#: Evaluation splits up to this size are kept on the accelerator for the whole run (Colored MNIST's: 0.2 GB).
EVAL_ON_DEVICE_BYTES = 2**30


def _evaluation_input(split: LabelledData, train: LabelledData, train_x: torch.Tensor, target: torch.device):
    """The inputs to evaluate ``split`` on: the training tensor already on ``target`` for the training split, a
    copy on ``target`` for small splits, else the host tensor (copied batch by batch by :func:`predict`)."""
    if split is train or split.x is train.x:
        return train_x
    if target.type != "cpu" and split.x.element_size() * split.x.numel() <= EVAL_ON_DEVICE_BYTES:
        return split.x.to(target)
    return split.x


@contextlib.contextmanager
def _precision(precision: str, device: torch.device) -> Iterator[None]:
    if precision == "bfloat16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def train(
    config: RunConfig,
    runs_root: Path | str,
    *,
    data_root: Path | str | None = None,
    device: str = "cpu",
    progress: bool = False,
    callbacks: Sequence[Callable[[int, Algorithm], None]] = (),
    task: Task | None = None,
    tensorboard: bool = False,
    max_steps: int | None = None,
    eval_batch_size: int = 4096,
) -> RunResult:
    """Train ``config`` into ``runs_root/<config.folder_name()>`` (skipping it if done, resuming if checkpointed).

    Args:
        data_root: where the data files live (passed to the task; not part of the run's identity).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        progress: show a progress bar.
        callbacks: called as ``callback(step, algorithm)`` after every update (e.g. a FeatureTracker's hook).
        task: an already loaded task (saves reloading data across runs of a sweep).
        tensorboard: also log the evaluation scalars, and z(t) of the network's features at initialisation on its
            first :data:`TENSORBOARD_PROBE` training examples (``z/z1 ..``), to ``run_dir/tensorboard`` (needs the
            tensorboard package).
        max_steps: stop (without ``done``) after this many steps in this call: for tests of resuming.
        eval_batch_size: examples per forward pass when evaluating (results do not depend on it).

    On an accelerator the training tensors are moved to it once, and so is every evaluation split of at most
    :data:`EVAL_ON_DEVICE_BYTES` (larger ones are copied batch by batch at each evaluation).
    """
    if tensorboard:
        require_tensorboard()  # before any file is written
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    if config.eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {config.eval_every}")
    start_time = time.perf_counter()
    run_dir = Path(runs_root) / config.folder_name()
    check_run_folder(run_dir, config)  # before the done check: a finished run of another config is not ours
    if is_done(run_dir):
        if task is not None:  # the caller's data: a finished run of other data is not this run
            check_data_fingerprint(run_dir, data_fingerprint(task), record=False)
        return RunResult(run_dir, config, read_metrics(run_dir), True, 0.0)
    task = _open_run_folder(run_dir, config, task, data_root)
    target = resolve_device(device)
    hparams = dict(config.hparams)
    if "seed" in hparams:  # methods with their own randomness (LfF's second network) follow the run's seed
        hparams["seed"] = config.seed
    algorithm, sampler, generator = _fresh_state(config, task, hparams, target)
    steps = total_steps(hparams, len(task.train))
    tracker = _response_tracker(algorithm.model, task.train, target) if tensorboard else None  # at initialisation
    splits = {n: split for n, split in task.evaluation.items() if config.eval_splits is None or n in config.eval_splits}

    step, checkpoint_path = 0, run_dir / "checkpoint.pt"
    notes = _schedule_notes(config.algorithm, algorithm.penalty_switch_step(), steps)
    if checkpoint_path.exists():
        try:
            state = load_checkpoint(checkpoint_path, map_location=target)
            truncate_metrics(run_dir, int(state["step"]))
            algorithm.load_state_dict(state["algorithm"])
            sampler.load_state_dict(state["sampler"])
            generator.set_state(state["generator"])
            step = int(state["step"])  # only once everything loaded: a damaged checkpoint restarts from 0
        except DamagedRunError as error:
            notes.append(set_aside_and_restart(run_dir, str(error)))
            algorithm, sampler, generator = _fresh_state(config, task, hparams, target)
    else:  # a run killed before its first checkpoint starts over
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    writer = _tensorboard_writer(run_dir / "tensorboard") if tensorboard else None

    train_x = task.train.x.to(target)
    train_y, train_group = task.train.y.to(target), task.train.group.to(target)
    train_index = torch.arange(len(task.train), device=target)
    eval_inputs = {name: _evaluation_input(split, task.train, train_x, target) for name, split in splits.items()}
    logged: dict[str, list[float]] = {}

    def evaluate_and_checkpoint(at_step: int) -> None:
        row: dict[str, Any] = {"step": at_step, "seconds": time.perf_counter() - start_time}
        row.update({f"train/{k}": float(np.mean(v)) for k, v in logged.items()})
        for name, split in splits.items():
            logits = predict(algorithm, eval_inputs[name], batch_size=eval_batch_size, device=target)
            row.update({f"{name}/{k}": v for k, v in evaluate_split(logits, split).items()})
        _append_row(run_dir / "metrics.jsonl", row)
        save_checkpoint(checkpoint_path, _checkpoint_state(algorithm, sampler, generator, at_step))
        if writer is not None:
            _log_scalars(writer, row, None if tracker is None else tracker(at_step, algorithm.model))
        logged.clear()

    if step == 0 and not read_metrics(run_dir):
        evaluate_and_checkpoint(0)
    bar = _progress_bar(progress, steps, step, config)
    limit = steps if max_steps is None else min(steps, step + max_steps)
    try:
        while step < limit:
            algorithm.before_step(step, steps_per_epoch=sampler.steps_per_epoch, train_x=train_x, train_y=train_y)
            batch = _batch(sampler.next(), (train_x, train_y, train_group, train_index), target)
            if task.augment is not None:
                batch = (task.augment(batch[0], generator), *batch[1:])
            with _precision(config.precision, target):
                logs = algorithm.update(batch)
            for key, value in logs.items():
                if key != "step":
                    logged.setdefault(key, []).append(value)
            step += 1
            for callback in callbacks:
                callback(step, algorithm)
            if step % config.eval_every == 0 or step == steps:
                evaluate_and_checkpoint(step)
            if bar is not None:
                bar[0].update(bar[1], completed=step)
    finally:
        if bar is not None:
            bar[0].stop()
        if writer is not None:
            writer.close()
    rows = read_metrics(run_dir)
    if step == steps:
        _write_done(run_dir, steps, time.perf_counter() - start_time, rows, notes)
    return RunResult(run_dir, config, rows, False, time.perf_counter() - start_time, notes)


def _schedule_notes(algorithm: str, switch: int | None, steps: int) -> list[str]:
    """A note (and a warning) when the method's penalty would switch on only after the run's last step."""
    if switch is None or switch < steps:
        return []
    note = (
        f"{algorithm}: its penalty switches on at step {switch} but the run ends at step {steps}, so it trained the "
        "plain loss throughout (ERM in all but name); a comparison with the paper does not apply"
    )
    warnings.warn(note, ScheduleNeverSwitchesWarning, stacklevel=3)
    return [note]


def _checkpoint_state(
    algorithm: Algorithm, sampler: BatchSampler, generator: torch.Generator, step: int
) -> dict[str, Any]:
    return {
        "algorithm": algorithm.state_dict(),
        "sampler": sampler.state_dict(),
        "generator": generator.get_state(),
        "step": step,
    }


def _batch(
    index: torch.Tensor | None, full: tuple[torch.Tensor, ...], target: torch.device
) -> tuple[torch.Tensor, ...]:
    """``(x, y, group, index)`` of the sampled examples (the whole training set for a full-batch step)."""
    if index is None:
        return full
    index = index.to(target)
    return (*(tensor[index] for tensor in full[:3]), index)


def _open_run_folder(run_dir: Path, config: RunConfig, task: Task | None, data_root: Path | str | None) -> Task:
    """Create the run folder with its ``config.json``, load the task unless given, and record (or check) the data
    fingerprint: a folder trained on other data is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = json.dumps(config.identity(), sort_keys=True, indent=2, default=json_default)
    atomic_write(run_dir / "config.json", lambda p: p.write_text(identity + "\n"))
    if task is None:
        options = dict(config.data)
        if data_root is not None:
            options["data_root"] = data_root
        task = load_task(config.dataset, options, config.seed)
    check_data_fingerprint(run_dir, data_fingerprint(task))
    return task


def _fresh_state(
    config: RunConfig, task: Task, hparams: dict[str, Any], target: torch.device
) -> tuple[Algorithm, BatchSampler, torch.Generator]:
    """The run at step 0: its network (initialised from the run's seed) in its algorithm, the batch sampler
    (seed + 1) and the generator of augmentation and other in-loop randomness (seed)."""
    model = task.build_model(config.hparams, torch.Generator().manual_seed(config.seed))
    algorithm = build_algorithm(config.algorithm, model.to(target), hparams, task.n_groups)
    sampler = BatchSampler(len(task.train), hparams.get("batch_size"), torch.Generator().manual_seed(config.seed + 1))
    return algorithm, sampler, torch.Generator().manual_seed(config.seed)


def _append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one evaluation row to ``metrics.jsonl``, on disk before the checkpoint that follows it."""
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _log_scalars(writer: Any, row: dict[str, Any], z: np.ndarray | None) -> None:
    """An evaluation row's numbers, and z(t) when tracked, to TensorBoard at the row's step."""
    at_step = row["step"]
    for key, value in row.items():
        if isinstance(value, int | float) and key != "step":
            writer.add_scalar(key, value, at_step)
    for j, value in enumerate(z if z is not None else ()):
        writer.add_scalar(f"z/z{j + 1}", float(value), at_step)


def _write_done(run_dir: Path, steps: int, seconds: float, rows: list[dict[str, Any]], notes: list[str]) -> None:
    """The ``done`` marker: the run finished, with the checksum of the metrics it finished with."""
    summary = {
        "steps": steps,
        "seconds": seconds,
        "final": rows[-1] if rows else {},
        "metrics_sha256": file_sha256(run_dir / "metrics.jsonl"),
        "notes": notes,
    }
    atomic_write(run_dir / "done", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))


#: TensorBoard's z(t): the responses (Eq. 8) of this many features, on this many training examples (the first ones).
TENSORBOARD_FEATURES, TENSORBOARD_PROBE = 5, 256


def _response_tracker(model: torch.nn.Module, train: LabelledData, target: torch.device) -> FeatureTracker:
    """A :class:`FeatureTracker` of the network at initialisation on the first training examples (no randomness
    used: the run's results do not depend on whether it is logged)."""
    n = min(TENSORBOARD_PROBE, len(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # {0, 1} labels of a one-logit model: mapped to {-1, +1}
        return FeatureTracker(model, train.x[:n].to(target), train.y[:n], k=min(TENSORBOARD_FEATURES, n))


def require_tensorboard() -> None:
    """Raise a clear ``ModuleNotFoundError`` (what to install) when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(
            "TensorBoard logging needs the tensorboard package, which is not installed: pip install "
            "'gradstarve[tensorboard]' (or pip install tensorboard), or leave TensorBoard logging off"
        )


def _tensorboard_writer(folder: Path):
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder))


def _progress_bar(enabled: bool, steps: int, done: int, config: RunConfig):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"{config.algorithm} s{config.seed}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task("train", total=steps, completed=done)
    bar.start()
    return bar, task

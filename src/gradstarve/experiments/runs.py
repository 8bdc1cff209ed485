"""The run folder: what defines a run (:class:`RunConfig`, its identity and hash), and everything read from or
written to its folder, checked, since a run folder is untrusted input (it is shared and copied).

A run folder holds ``config.json`` (the identity), ``metrics.jsonl`` (one JSON line per evaluation, append-only),
``checkpoint.pt`` (tensors only, with a SHA-256, read with ``weights_only=True``), ``data.json`` (the fingerprint of
the data it trained on) and ``done`` (the summary, with the checksum of ``metrics.jsonl``). The training loop that
fills it is :func:`gradstarve.experiments.train.train`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradstarve.experiments.tasks import LOCATION_OPTIONS, check_task_options
from gradstarve.hparams import check_hparams, default_hparams

#: Bumped when a change to the training loop changes results, so old run folders are not mistaken for new ones.
TRAINER_VERSION = 1
PRECISIONS = ("float32", "bfloat16")
#: The run folder's record of the data it trained on (:func:`gradstarve.experiments.tasks.data_fingerprint`).
DATA_FILE = "data.json"


@dataclass(frozen=True)
class RunConfig:
    """What defines a run. Its :meth:`run_id` (a hash of these fields, minus data locations) names the run folder.

    Attributes:
        dataset, algorithm: names from :data:`gradstarve.experiments.tasks.TASKS` and ``ALGORITHMS``.
        hparams: complete hyperparameters (see :func:`make_config`, which starts from the defaults table).
        seed: seeds the model's initialisation, the batch order, augmentation and the data where it is random.
        data: task options (e.g. ``{"val_fraction": 0.1}``); location options like ``data_root`` are not hashed.
        eval_every: evaluate (and checkpoint) every this many steps, and at the last step.
        eval_splits: which of the task's splits to evaluate (``None``: all).
        precision: ``"float32"`` or ``"bfloat16"`` (autocast for the forward pass).
    """

    dataset: str
    algorithm: str
    hparams: Mapping[str, Any]
    seed: int = 0
    data: Mapping[str, Any] = field(default_factory=dict)
    eval_every: int = 100
    eval_splits: tuple[str, ...] | None = None
    precision: str = "float32"

    def identity(self) -> dict[str, Any]:
        """The fields that define the run (data locations removed), JSON-ready."""
        values = asdict(self)
        values["hparams"] = dict(self.hparams)
        values["data"] = {k: v for k, v in self.data.items() if k not in LOCATION_OPTIONS}
        values["eval_splits"] = list(self.eval_splits) if self.eval_splits is not None else None
        values["trainer_version"] = TRAINER_VERSION
        return values

    def run_id(self) -> str:
        """A stable hash of :meth:`identity`: 16 hex digits of SHA-256 over canonical JSON (sorted keys)."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=json_default)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def folder_name(self) -> str:
        return f"{self.dataset}-{self.algorithm}-s{self.seed}-{self.run_id()}"


def json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a run config")


def make_config(
    dataset: str,
    algorithm: str,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    **fields: Any,
) -> RunConfig:
    """A :class:`RunConfig` whose hyperparameters are the table's defaults for ``(algorithm, dataset)`` with
    ``overrides`` applied. Unknown override names are refused (a typo must not silently do nothing)."""
    hparams = default_hparams(algorithm, dataset)
    unknown = set(overrides or {}) - set(hparams)
    if unknown:
        raise ValueError(
            f"unknown hyperparameters for {algorithm} on {dataset}: {sorted(unknown)}; known: {sorted(hparams)}"
        )
    hparams.update(overrides or {})
    check_hparams(algorithm, hparams, dataset)
    if fields.get("data"):
        check_task_options(dataset, fields["data"])
    return RunConfig(dataset, algorithm, hparams, seed, **fields)


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


class DamagedRunError(ValueError):
    """A run folder's file cannot be trusted (torn or edited ``metrics.jsonl``, corrupt checkpoint, a ``done`` that
    does not match its metrics). The message names the file and what to do."""


def _fix_hint(run_dir: Path) -> str:
    return f"delete {run_dir} (or run 'gradstarve sweep delete-incomplete' for a sweep) and launch again to retrain it"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation lines of a run folder, in order.

    Only a *torn last line* (the file does not end with a newline: a kill mid-write) is dropped. Any other line
    that is not a JSON object with an integer ``step`` larger than the previous one raises
    :class:`DamagedRunError` naming the file and line: evaluations are never dropped silently.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # after the last newline: "" unless the last write was torn
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or isinstance(row.get("step"), bool) or not isinstance(row.get("step"), int):
            raise DamagedRunError(
                f"{path} line {number} is not a metrics row ({line[:60]!r}): the file is damaged; "
                + _fix_hint(Path(run_dir))
            )
        if rows and row["step"] <= rows[-1]["step"]:
            raise DamagedRunError(
                f"{path} line {number}: step {row['step']} does not follow step {rows[-1]['step']}; "
                + _fix_hint(Path(run_dir))
            )
        rows.append(row)
    del torn  # a partial line from a kill mid-write: that evaluation is redone from the checkpoint
    return rows


def truncate_metrics(run_dir: Path, up_to_step: int) -> None:
    kept = [row for row in read_metrics(run_dir) if row["step"] <= up_to_step]
    atomic_write(run_dir / "metrics.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / "done").exists()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class RunInspection:
    """What a run folder holds, checked (:func:`inspect_run`).

    Attributes:
        state: ``"missing"`` (no folder or no metrics), ``"unfinished"`` (no ``done``), ``"done"``, or
            ``"damaged"`` (``problem`` says why; never counted as a result).
        rows: the metrics rows (empty unless ``done`` or ``unfinished``).
        notes: caveats the run recorded in ``done`` (e.g. a penalty that never switched on).
    """

    run_dir: Path
    state: str
    rows: list[dict[str, Any]]
    problem: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state == "done"


def inspect_run(run_dir: Path | str, config: RunConfig | None = None) -> RunInspection:
    """Check a run folder before its numbers are used: ``config.json`` (against ``config`` when given), every
    metrics line, and for a finished run that ``done`` matches ``metrics.jsonl`` (its checksum, or for folders
    written before checksums, its last step). A run folder is untrusted input: nothing in it is executed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return RunInspection(run_dir, "missing", [], "no run folder")
    if config is not None:
        try:
            check_run_folder(run_dir, config)
        except (ValueError, OSError) as error:
            return RunInspection(run_dir, "damaged", [], str(error))
    try:
        rows = read_metrics(run_dir)
    except DamagedRunError as error:
        return RunInspection(run_dir, "damaged", [], str(error))
    if not is_done(run_dir):
        return RunInspection(run_dir, "unfinished" if rows else "missing", rows, None if rows else "no evaluations")
    try:
        summary = json.loads((run_dir / "done").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as error:
        return RunInspection(run_dir, "damaged", [], f"{run_dir / 'done'} cannot be read ({error})")
    if not rows:
        return RunInspection(run_dir, "damaged", [], f"{run_dir / 'metrics.jsonl'} is missing or empty")
    expected = summary.get("metrics_sha256")
    if expected is not None and expected != file_sha256(run_dir / "metrics.jsonl"):
        return RunInspection(
            run_dir, "damaged", [], f"{run_dir / 'metrics.jsonl'} changed after the run finished (checksum in done)"
        )
    steps = summary.get("steps")
    if isinstance(steps, int) and rows[-1]["step"] != steps:
        return RunInspection(
            run_dir,
            "damaged",
            [],
            f"{run_dir / 'metrics.jsonl'} ends at step {rows[-1]['step']} but the run finished at step {steps}",
        )
    notes = summary.get("notes") or ()
    return RunInspection(run_dir, "done", rows, notes=tuple(str(note) for note in notes))


def nonfinite_metrics(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The accuracy / loss keys of a run's metrics rows that hold NaN or infinity (a diverged run), sorted."""
    bad = set()
    for row in rows:
        for key, value in row.items():
            if key.endswith(("/accuracy", "/nll", "/loss")) and isinstance(value, float) and not math.isfinite(value):
                bad.add(key)
    return sorted(bad)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: tensors only (no pickled code), with a checksum
# --------------------------------------------------------------------------------------------------------------
#: First bytes of a checkpoint written by this version: the magic, the SHA-256 of the payload, a newline.
CHECKPOINT_MAGIC = b"GRADSTARVE-CHECKPOINT-1 "


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically, with a SHA-256 of its bytes."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    header = CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write(Path(path), lambda p: p.write_bytes(header + payload))


def load_checkpoint(path: Path, map_location: torch.device | str | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: a file that would need to unpickle arbitrary
    objects (and so could run code) is refused. Raises :class:`DamagedRunError` naming the file when its checksum
    does not match or it cannot be read. Checkpoints from before checksums (no magic) are read the same way."""
    path = Path(path)
    data = path.read_bytes()
    payload = data
    if data.startswith(CHECKPOINT_MAGIC):
        end = data.find(b"\n", len(CHECKPOINT_MAGIC))
        expected = data[len(CHECKPOINT_MAGIC) : end].decode("ascii", "replace") if end > 0 else ""
        payload = data[end + 1 :] if end > 0 else b""
        if hashlib.sha256(payload).hexdigest() != expected:
            raise DamagedRunError(f"{path}: checksum mismatch (the file is damaged)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types here (EOFError, UnpicklingError, RuntimeError, ...)
        raise DamagedRunError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not {"algorithm", "sampler", "generator", "step"} <= set(state):
        raise DamagedRunError(f"{path} is not a gradstarve checkpoint (missing keys)")
    return state


class ScheduleNeverSwitchesWarning(UserWarning):
    """A run ends before its method's penalty switches on: it trained the plain loss."""


class RunRestartedWarning(UserWarning):
    """A damaged checkpoint or metrics file was set aside and the run restarted from step 0."""


def check_run_folder(run_dir: Path, config: RunConfig) -> None:
    """Raise ``ValueError`` if ``run_dir`` holds the ``config.json`` of another run (a hash collision, or a folder
    renamed or edited by hand): its files must never be taken for ``config``'s."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.exists():
        return
    identity = json.loads(json.dumps(config.identity(), default=json_default))
    if json.loads(config_path.read_text()) != identity:
        raise ValueError(f"{run_dir} holds a different run (config.json differs); refusing to mix them")


def check_data_fingerprint(run_dir: Path, fingerprint: str, record: bool = True) -> None:
    """Record the data's fingerprint in ``run_dir/data.json``, or refuse if the folder holds a run of other data
    (the run's identity names the task and its options, not the user's tensors)."""
    path = run_dir / DATA_FILE
    if path.exists():
        try:
            recorded = json.loads(path.read_text()).get("fingerprint")
        except (ValueError, AttributeError):
            recorded = None
        if recorded != fingerprint:
            raise ValueError(
                f"{run_dir} was trained on other data (fingerprint {recorded}, now {fingerprint}): its results are "
                "not this run's. Use another run root for this data, or give the task an option that names it "
                "(e.g. data_seed), or delete the folder to retrain"
            )
        return
    if record:
        atomic_write(path, lambda p: p.write_text(json.dumps({"fingerprint": fingerprint}) + "\n"))


def set_aside_and_restart(run_dir: Path, problem: str) -> str:
    """Set a damaged checkpoint and the metrics aside (renamed ``*.damaged``, kept for inspection), warn, and
    return the note: the run starts again from step 0."""
    for name in ("checkpoint.pt", "metrics.jsonl"):
        if (run_dir / name).exists():
            os.replace(run_dir / name, run_dir / f"{name}.damaged")
    note = f"{problem}; set aside as *.damaged and restarted {run_dir.name} from step 0"
    warnings.warn(note, RunRestartedWarning, stacklevel=3)
    return note

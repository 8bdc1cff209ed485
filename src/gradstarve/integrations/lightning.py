"""Gradient starvation inside a PyTorch Lightning fit: z(t) (Eq. 8) logged as you train, the report at the end.

``StarvationCallback(x, y)`` fits the features (Def. 1) of the module as it is when ``fit`` starts (its
initialisation, for a fresh module), records the responses ``z(t) = U^T Y ŷ(t)`` to those fixed features on the
probe set ``(x, y)`` every ``every`` optimizer steps, logs them as ``starvation/z1 .. zk`` to every logger of the
trainer (TensorBoard, CSV, W&B, ...), and at the end of fit writes :func:`gradstarve.analysis.starvation_report`
(``starvation.md``, ``starvation.png``) and the z(t) history (``z_history.csv``) to ``report_dir``: which of the
features the network started with carry the trained model, which starve, and what each aligns with.

Needs ``pip install "gradstarve[lightning]"``; a plain training loop needs no framework:
:class:`gradstarve.analysis.FeatureTracker` is called as ``tracker(step, model)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from gradstarve.analysis import FeatureTracker, starvation_report
from gradstarve.experiments.analyse import write_starvation_report

try:
    from lightning.pytorch import Callback
except ImportError as error:  # pragma: no cover - exercised only where lightning is absent
    raise ImportError(
        'gradstarve.integrations.lightning needs PyTorch Lightning: pip install "gradstarve[lightning]"'
    ) from error

__all__ = ["StarvationCallback"]


class StarvationCallback(Callback):
    """Track z(t) on a fixed probe set during ``Trainer.fit`` and write the starvation report at its end.

    Args:
        x: ``(n, ...)`` probe inputs (a few hundred to a few thousand examples; the features cost an ``n x n``
            kernel, or Lanczos with ``method="matrix_free"``).
        y: ``(n,)`` labels: {-1, +1} or {0, 1} for a one-logit module, class indices for a ``C``-logit one.
        k: number of features to track and report.
        every: record and log z every ``every`` optimizer steps (and at step 0, before training).
        groups: optional ``(n,)`` group ids of the probe examples, for the report's per-group table and figure.
        group_names: names of the group ids.
        attributes: optional names -> ``(n,)`` values (binary or continuous): the report aligns every feature with
            each (e.g. ``{"shortcut": ..., "core": ...}``).
        report_dir: where the report goes; default ``<trainer.log_dir or default_root_dir>/starvation``.
        method: feature computation (see :class:`gradstarve.analysis.FeatureAnalysis`).
        device: where the features are computed (default: where the module is when fit starts).
        log_prefix: metric names are ``<log_prefix>/z1 ..``.

    After fit: ``history`` (a DataFrame: ``step``, ``z1 .. zk``), ``table`` (the report) and ``files`` (written).
    Only the global-zero process writes files.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | np.ndarray,
        *,
        k: int = 10,
        every: int = 50,
        groups: torch.Tensor | np.ndarray | None = None,
        group_names: Sequence[str] | None = None,
        attributes: Mapping[str, torch.Tensor | np.ndarray] | None = None,
        report_dir: Path | str | None = None,
        method: Literal["auto", "dense", "matrix_free"] = "auto",
        device: str | torch.device | None = None,
        log_prefix: str = "starvation",
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
            raise ValueError("x must be a tensor of at least 2 probe examples, shape (n, ...)")
        self.x, self.y = x, y
        self.k, self.every, self.method, self.device = k, every, method, device
        self.groups, self.group_names, self.attributes = groups, group_names, attributes
        self.report_dir = None if report_dir is None else Path(report_dir)
        self.log_prefix = log_prefix
        self.tracker: FeatureTracker | None = None
        self.table: pd.DataFrame | None = None
        self.files: list[Path] = []
        self._last_step = -1

    @property
    def history(self) -> pd.DataFrame:
        """One row per recorded step: ``step`` and ``z1 .. zk`` (empty before fit)."""
        if self.tracker is None:
            return pd.DataFrame(columns=["step"])
        return self.tracker.history

    def _log(self, trainer: Any, step: int, z: np.ndarray) -> None:
        metrics = {f"{self.log_prefix}/z{j + 1}": float(value) for j, value in enumerate(z)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker = FeatureTracker(
            pl_module, self.x, self.y, self.k, every=self.every, method=self.method, device=self.device
        )
        self._last_step = -1
        self._record(trainer, pl_module)  # step 0 for a fresh fit: the responses at initialisation

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record(trainer, pl_module)

    def _record(self, trainer: Any, pl_module: Any) -> None:
        assert self.tracker is not None  # on_fit_start ran
        step = int(trainer.global_step)  # optimizer steps taken so far
        if step == self._last_step:
            return  # gradient accumulation: several batches end on the same optimizer step
        z = self.tracker(step, pl_module)
        if z is not None:
            self._last_step = step
            self._log(trainer, step, z)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        assert self.tracker is not None
        table, figure = starvation_report(
            pl_module,
            self.x,
            self.y,
            self.groups,
            attributes=self.attributes,
            k=self.k,
            group_names=self.group_names,
            analysis=self.tracker.analysis,
        )
        self.table = table
        if not trainer.is_global_zero:
            return
        out = self.report_dir or Path(trainer.log_dir or trainer.default_root_dir) / "starvation"
        description = (
            f"{type(pl_module).__name__} after {trainer.global_step} optimizer steps; {self.x.shape[0]} probe "
            "examples; features of the module when fit started (Def. 1), responses of the trained one (Eq. 8)."
        )
        self.files = write_starvation_report(table, figure, out, "Starvation diagnosis (Lightning fit)", description)
        self.history.to_csv(out / "z_history.csv", index=False)
        self.files.append(out / "z_history.csv")

"""Feature analysis of a PyTorch model: its features (Def. 1), its responses to them (Eq. 8) and starvation.

* :class:`FeatureAnalysis` (scikit-learn style): ``fit(model, x, y)`` computes the ``k`` strongest features of
  ``Y Φ₀ = U S V^T`` at the model's current parameters; ``response(logits)`` gives ``z = U^T Y ŷ`` (Eq. 8).
* :class:`FeatureTracker`: fixes ``U`` at initialisation (as in Fig. 2) and records ``z(t)`` during any training
  loop; ``history`` is a pandas DataFrame.
* :func:`starvation_report`: which features carry the network's response and how each feature's response splits
  over groups: the "starvation monitor".

Labels are ``{-1, +1}`` (``{0, 1}`` are mapped, with a warning) for one-logit models, and class indices for
``C``-logit models (2-logit and softmax heads), whose features are Def. 1 of the multi-class margin
``Σ_c (e_y - 1/C)_c ŷ_c`` (:class:`MarginModel`; at ``C = 2`` Def. 1 on the logit difference, halved).
Responses use ``r = Y ŷ`` by default; pass a ``baseline`` (the logits at
initialisation) to use Eq. 6's deviation ``r = Y (ŷ - ŷ₀)`` instead. Note that ``z = U^T Y ŷ = U_K^T ŷ`` where
``U_K`` are the eigenvectors of the plain Gram ``K`` (``U = Y U_K``), which is what the paper's released code computes
for Fig. 2.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from gradstarve import ntk
from gradstarve.devices import model_device, on_device, resolve_device


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _model_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """The model's logits in eval mode, without gradients: ``(n,)`` for one output, else ``(n, C)``. ``x`` is moved
    to the model's device batch by batch (a trainer may have moved the model since ``x`` was chosen)."""
    outputs = []
    device = model_device(model)
    with ntk.eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device)
            outputs.append(model(batch).reshape(batch.shape[0], -1))
    logits = torch.cat(outputs)
    return _as_numpy(logits[:, 0] if logits.shape[1] == 1 else logits)


@contextlib.contextmanager
def _progress(progress: bool | Callable[[str, int], None]) -> Iterator[Callable[[str, int], None]]:
    """Yield ``report(stage, count)``: the caller's callback, a rich status line on stderr (``True``), or nothing."""
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda stage, count: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("features", total=None)

        def report(stage: str, count: int) -> None:
            bar.update(task, description=f"{stage}{f': {count}' if count else ''}")

        yield report


class MarginModel(nn.Module):
    """The multi-class margin of a ``C``-logit model as a one-output model: ``m(x; w) = Σ_c w_c ŷ_c(x)`` with
    ``w = e_y - 1/C`` (the true-class logit minus the mean logit).

    Its tangent features are the rows ``Σ_c w_c ∂ŷ_c/∂θ``: the direction the cross-entropy's gradient takes at
    uniform predictions (``∂CE/∂ŷ = p - e_y``, ``p = 1/C``), signed so that the label is built in, as ``Y Φ₀`` is
    in the binary Def. 1. With ``C = 2`` logits, ``m = y (ŷ_1 - ŷ_0) / 2`` (``y`` in {-1, +1}): Def. 1 on the logit
    difference, up to a factor 1/2. The input is ``x`` flattened with ``w`` appended (``(n, D + C)``): the weights
    travel with their example through every NTK path.
    """

    def __init__(self, model: nn.Module, feature_shape: Sequence[int], classes: int) -> None:
        super().__init__()
        self.model, self.feature_shape, self.classes = model, tuple(feature_shape), int(classes)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x = packed[:, : -self.classes].reshape(packed.shape[0], *self.feature_shape)
        return (self.model(x) * packed[:, -self.classes :]).sum(dim=1, keepdim=True)


def class_weights(y: torch.Tensor | np.ndarray, classes: int) -> np.ndarray:
    """``(n, C)`` ``e_y - 1/C`` for integer class labels ``y`` in ``[0, C)`` (a clear error otherwise)."""
    labels = np.asarray(_as_numpy(y)).reshape(-1)
    if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(
            f"a {classes}-logit model needs integer class labels in [0, {classes}), got {np.unique(labels)[:10]}"
        )
    weights = np.full((labels.shape[0], classes), -1.0 / classes)
    weights[np.arange(labels.shape[0]), labels.astype(np.int64)] += 1.0
    return weights


class FeatureAnalysis:
    """The ``k`` strongest features of a model's tangent features, ``Y Φ₀ = U S V^T`` (Def. 1).

    Args:
        k: number of features (default: all ``n``, dense only).
        method: ``"dense"`` (Gram + ``eigh``/``eigsh``, ``O(n²)`` memory, keeps ``gram_``), ``"matrix_free"``
            (Lanczos on ``K v = Φ (Φ^T v)``, bounded memory) or ``"auto"`` (dense up to n = 8,000).
        ntk_method: how the kernel is computed (see :func:`gradstarve.ntk.top_features`): the ``method`` of
            :func:`gradstarve.ntk.empirical_ntk` (dense) or of :func:`gradstarve.ntk.kernel_operator` (matrix-free).
        dtype: compute dtype (default float64 for accurate eigenvectors).
        batch_size: mini-batch for the matrix-free path.
        progress: ``True`` shows the stage (and the Lanczos product count) on stderr; a callable ``(stage, count)``
            receives the same, e.g. for a notebook bar.
        device: compute on this device (``"auto"``: CUDA when visible, ``"cpu"``, ``"cuda[:N]"``); the model is
            copied there, never moved (:func:`gradstarve.devices.on_device`). Default: where the model is, with
            ``x`` moved to it.

    Attributes set by :meth:`fit`: ``strengths_`` ``(k,)`` (s, descending), ``eigenvalues_`` (s²), ``U_`` ``(n, k)``,
    ``labels_`` ``(n,)`` in {-1, +1}, ``gram_`` ``(n, n)`` (dense only, else ``None``), ``trace_`` (``trace K =
    Σ s_j²`` over all features, so ``eigenvalues_ / trace_`` is each feature's share), ``initial_logits_`` ``(n,)``
    (the model's logits at fit time).
    """

    def __init__(
        self,
        k: int | None = None,
        method: Literal["auto", "dense", "matrix_free"] = "auto",
        ntk_method: ntk.Method = "auto",
        dtype: torch.dtype | None = torch.float64,
        batch_size: int = 4096,
        progress: bool | Callable[[str, int], None] = False,
        device: str | torch.device | None = None,
    ) -> None:
        if device is not None:
            resolve_device(device)  # an accelerator that is not there fails here, not at fit time
        if method not in ("auto", "dense", "matrix_free"):
            raise ValueError(f"method must be 'auto', 'dense' or 'matrix_free', got {method!r}")
        self.progress = progress
        self.k = k
        self.method = method
        self.ntk_method = ntk_method
        self.dtype = dtype
        self.batch_size = batch_size
        self.device = device

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray) -> FeatureAnalysis:
        """Compute the features of ``model`` on ``(x, y)`` at its current parameters. Returns ``self``.

        One-logit models: Def. 1 with labels in {-1, +1} (or {0, 1}). ``C``-logit models (``C >= 2``): labels are
        class indices and the features are Def. 1 of the multi-class margin (:class:`MarginModel`), which reduces
        to Def. 1 on the logit difference at ``C = 2``.
        """
        model, (x,) = on_device(model, (x,), self.device if self.device is not None else model_device(model))
        n = x.shape[0]
        raw_model, raw_x = model, x
        outputs = _model_logits(model, x[:1])
        self.classes_ = 1 if outputs.ndim == 1 else int(outputs.shape[1])
        if self.classes_ > 1:
            weights = class_weights(y, self.classes_)
            self.weights_ = weights
            self.class_ids_ = np.argmax(weights, axis=1)
            packed = torch.cat([x.reshape(n, -1), torch.as_tensor(weights, dtype=x.dtype, device=x.device)], dim=1)
            model, x = MarginModel(model, x.shape[1:], self.classes_), packed
            labels = torch.ones(n, dtype=torch.float64)
        else:
            self.weights_ = None
            labels = ntk.signed_labels(y, n)
            self.class_ids_ = (labels.numpy() > 0).astype(np.int64)
        method = self.method
        if method == "auto":
            method = "dense" if n <= 8000 else "matrix_free"
        if method == "matrix_free" and self.k is None:
            raise ValueError("method='matrix_free' needs k (the number of features to compute)")
        with _progress(self.progress) as report:
            if method == "dense":
                report("NTK Gram and eigendecomposition", 0)
                gram = ntk.empirical_ntk(model, x, method=self.ntk_method, dtype=self.dtype, multi_output="trace")
                found = ntk.features_from_gram(gram, labels, self.k)
                self.gram_ = _as_numpy(gram)
            else:
                found = ntk.top_features(
                    model,
                    x,
                    labels,
                    self.k,
                    "matrix_free",
                    dtype=self.dtype,
                    batch_size=self.batch_size,
                    progress=lambda count: report("Lanczos: kernel-vector products", count),
                    ntk_method=self.ntk_method,
                )
                self.gram_ = None
        if self.gram_ is not None:  # the dense kernel is there: its trace, no second pass over the model
            self.trace_ = float(np.trace(self.gram_))
        else:
            self.trace_ = float(ntk.kernel_diagonal(model, x, dtype=self.dtype).sum())
        self.U_ = found.U
        self.strengths_ = found.strengths
        self.eigenvalues_ = found.eigenvalues
        self.labels_ = labels.numpy()
        self.initial_logits_ = _model_logits(raw_model, raw_x.to(next(raw_model.parameters()).dtype))
        return self

    def margins(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """``r``: the label-signed logits ``y_i ŷ_i`` (one logit), or the multi-class margins ``Σ_c w_ic ŷ_ic``
        (:class:`MarginModel`) of ``(n, C)`` logits."""
        values = _as_numpy(logits)
        if self.weights_ is None:
            return self.labels_ * values.reshape(-1)
        if values.shape != self.weights_.shape:
            raise ValueError(f"logits must have shape {self.weights_.shape} (examples x classes), got {values.shape}")
        return np.sum(self.weights_ * values, axis=1)

    #: The arrays :meth:`save` writes (``gram_`` is never saved: it is ``n x n``).
    _SAVED = ("U_", "strengths_", "eigenvalues_", "labels_", "initial_logits_")

    def save(self, path: str | Path) -> Path:
        """Write the fitted features to ``path`` (``.npz``): ``U_``, ``strengths_``, ``eigenvalues_``, ``labels_``,
        ``initial_logits_`` and ``trace_``, plus the settings as JSON text, never the Gram and never a pickle
        (:meth:`load` reads it with ``allow_pickle=False``). Returns the path written."""
        self._check_fitted()
        path = Path(path)
        settings = {"k": self.k, "method": self.method, "ntk_method": self.ntk_method, "format": 1}
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in self._SAVED}
        arrays["class_ids_"] = np.asarray(self.class_ids_, dtype=np.float64)
        if self.weights_ is not None:
            arrays["weights_"] = np.asarray(self.weights_, dtype=np.float64)
        np.savez(path, trace_=np.float64(self.trace_), settings=np.array(json.dumps(settings)), **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> FeatureAnalysis:
        """A fitted analysis from :meth:`save`'s file (``gram_`` is ``None``); a file of another layout is an error
        naming what is missing."""
        with np.load(Path(path), allow_pickle=False) as data:
            missing = [name for name in (*cls._SAVED, "trace_", "settings") if name not in data.files]
            if missing:
                raise ValueError(f"{path} is not a saved FeatureAnalysis: it lacks {missing}")
            settings = json.loads(str(data["settings"]))
            analysis = cls(k=settings["k"], method=settings["method"], ntk_method=settings["ntk_method"])
            for name in cls._SAVED:
                setattr(analysis, name, data[name])
            analysis.trace_ = float(data["trace_"])
            analysis.weights_ = data["weights_"] if "weights_" in data.files else None
            analysis.class_ids_ = data["class_ids_"].astype(np.int64) if "class_ids_" in data.files else None
            analysis.classes_ = 1 if analysis.weights_ is None else int(analysis.weights_.shape[1])
        analysis.gram_ = None
        return analysis

    def _check_fitted(self) -> None:
        if not hasattr(self, "U_"):
            raise RuntimeError("FeatureAnalysis is not fitted yet: call fit(model, x, y) first")

    def response(
        self, logits: torch.Tensor | np.ndarray, baseline: torch.Tensor | np.ndarray | None = None
    ) -> np.ndarray:
        """Feature responses ``z = U^T r`` (Eq. 8) with ``r = Y ŷ``, or ``r = Y (ŷ - baseline)`` (Eq. 6).

        Args:
            logits: ``(n,)`` or ``(n, 1)`` logits on the fitted examples.
            baseline: optional ``(n,)`` logits to subtract, e.g. ``self.initial_logits_``.

        Returns:
            ``(k,)`` float64.
        """
        self._check_fitted()
        values = _as_numpy(logits)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.shape[0] != self.U_.shape[0]:
            raise ValueError(
                f"logits must have {self.U_.shape[0]} entries (the fitted examples), got {values.shape[0]}"
            )
        if baseline is not None:
            values = values - _as_numpy(baseline).reshape(values.shape)
        return self.U_.T @ self.margins(values)

    def plot(self, ax=None) -> Figure:
        """The spectrum: strengths ``s_j`` (log scale) and the cumulative share of ``Σ s²`` they hold."""
        self._check_fitted()
        figure = Figure(figsize=(6, 3.6), layout="constrained") if ax is None else ax.figure
        ax = figure.subplots() if ax is None else ax
        index = np.arange(1, self.strengths_.shape[0] + 1)
        ax.semilogy(index, self.strengths_, marker="o", ms=3, lw=1.2, color="C0")
        ax.set_xlabel("feature j (Def. 1)")
        ax.set_ylabel("strength $s_j$", color="C0")
        ax.grid(ls="--", lw=0.5, alpha=0.5)
        share = ax.twinx()
        share.plot(index, np.cumsum(self.eigenvalues_) / self.trace_, color="C1", lw=1.2)
        share.set_ylabel("cumulative share of trace K", color="C1")
        share.set_ylim(0, 1.05)
        ax.set_title("NTK feature spectrum")
        return figure


class FeatureTracker:
    """Records the responses ``z(t) = U^T Y ŷ(t)`` (Eq. 8) to features fixed at initialisation, as in Fig. 2.

    Create it before training (it fits :class:`FeatureAnalysis` on the model as it is), then call it at each step
    of any training loop: ``tracker(step)`` evaluates the model on the tracked examples (eval mode, no gradients)
    and records ``z`` if ``step`` is one of the chosen steps. ``tracker.callback`` has the ``(step, model)``
    signature of the library's trainers.

    Args:
        model: the model at initialisation.
        x: the examples to track.
        y: their labels, {-1, +1} or {0, 1}.
        k: number of features to track.
        every: record every ``every``-th step (ignored when ``steps`` is given).
        steps: explicit steps at which to record.
        relative_to_initial: use Eq. 6's ``r = Y (ŷ - ŷ₀)`` so that ``z(0) = 0``; default ``False`` uses
            ``r = Y ŷ``, as the paper's Fig. 2 does.
        method: feature computation (see :class:`FeatureAnalysis`).
        device: where the features are computed (see :class:`FeatureAnalysis`); the responses are evaluated
            wherever the model is at each step.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | np.ndarray,
        k: int = 10,
        *,
        every: int = 1,
        steps: Iterable[int] | None = None,
        relative_to_initial: bool = False,
        method: Literal["auto", "dense", "matrix_free"] = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.model = model
        self.x = x
        self.every = every
        self.steps = None if steps is None else {int(step) for step in steps}
        self.analysis = FeatureAnalysis(k=min(k, x.shape[0]), method=method, device=device).fit(model, x, y)
        self.baseline = self.analysis.initial_logits_ if relative_to_initial else None
        self._steps: list[int] = []
        self._responses: list[np.ndarray] = []

    def should_record(self, step: int) -> bool:
        return step in self.steps if self.steps is not None else step % self.every == 0

    def __call__(self, step: int, model: nn.Module | None = None) -> np.ndarray | None:
        """Record ``z`` at ``step`` (if chosen) for ``model`` (default: the tracked model); return it or ``None``."""
        if not self.should_record(step):
            return None
        z = self.analysis.response(_model_logits(model or self.model, self.x), self.baseline)
        self._steps.append(int(step))
        self._responses.append(z)
        return z

    def callback(self, step: int, model: nn.Module) -> None:
        """``(step, model)`` hook for training loops; also accepts an algorithm (anything holding ``.model``), the
        form :func:`gradstarve.experiments.train.train` passes its callbacks."""
        self(step, getattr(model, "model", model))

    def record(self, step: int, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """Record ``z`` at ``step`` from logits already computed on the tracked examples (saves a forward pass)."""
        z = self.analysis.response(logits, self.baseline)
        self._steps.append(int(step))
        self._responses.append(z)
        return z

    @property
    def history(self) -> pd.DataFrame:
        """One row per recorded step: ``step`` and ``z1 .. zk``."""
        k = self.analysis.U_.shape[1]
        frame = pd.DataFrame(np.array(self._responses).reshape(-1, k), columns=[f"z{j + 1}" for j in range(k)])
        frame.insert(0, "step", np.array(self._steps, dtype=np.int64))
        return frame

    def plot(self, features: Sequence[int] = (1, 2), ax=None) -> Figure:
        """``z_j(t)`` for the given 1-based feature indices."""
        history = self.history
        figure = Figure(figsize=(6, 3.6), layout="constrained") if ax is None else ax.figure
        ax = figure.subplots() if ax is None else ax
        for j in features:
            if not 1 <= j <= self.analysis.U_.shape[1]:
                raise ValueError(f"feature index {j} outside 1..{self.analysis.U_.shape[1]}")
            ax.plot(history["step"], history[f"z{j}"], label=f"$z_{j}$ (s = {self.analysis.strengths_[j - 1]:.3g})")
        ax.set_xlabel("step")
        ax.set_ylabel("response $z_j$ (Eq. 8)")
        ax.grid(ls="--", lw=0.5, alpha=0.5)
        ax.legend()
        return figure


#: A feature "carries a real share of strength" from this share of Σ s² on.
STARVED_MIN_STRENGTH_SHARE = 0.01
#: ... and is starved when its response share is below this fraction of its strength share.
STARVED_RESPONSE_RATIO = 0.25
#: The verdict names an attribute (or the label) only from this |alignment| on.
ALIGNED = 0.2


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0


def feature_alignment(values: np.ndarray, attribute: np.ndarray, labels: np.ndarray | None) -> float:
    """``|correlation|`` between a feature's per-example values and an attribute; with ``labels``, *within class*:
    the Pearson correlation inside each class, averaged with the class sizes as weights (classes where either is
    constant count as 0), so that an attribute is not credited for what it shares with the label. The sign of a
    feature (a singular vector) is arbitrary, hence the absolute value."""
    if labels is None:
        return abs(_correlation(values, attribute))
    total = 0.0
    for c in np.unique(labels):
        mask = labels == c
        total += mask.mean() * _correlation(values[mask], attribute[mask])
    return abs(total)


def starvation_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | np.ndarray,
    groups: torch.Tensor | np.ndarray | None = None,
    *,
    attributes: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    k: int = 10,
    group_names: Sequence[str] | None = None,
    analysis: FeatureAnalysis | None = None,
) -> tuple[pd.DataFrame, Figure]:
    """Which features carry the model's response, which starve, and what each one aligns with.

    For the ``k`` strongest features (Def. 1, at the model's current parameters unless a fitted ``analysis`` is
    given: fit one at initialisation to ask what training did with the features the network started with), with
    ``r = Y ŷ`` the margins:

    * ``strength`` ``s_j`` and ``strength_share`` ``s_j² / Σ_j s_j²`` (over the ``k`` features);
    * ``response`` ``z_j = U_j^T r`` (Eq. 8) and ``response_share`` ``z_j² / Σ_j z_j²``;
    * ``response_per_strength`` ``z_j / s_j``: how much of what the feature offers was learned (Eq. 18: at a fixed
      point under weight decay ``z_j / s_j = s_j (U^T α*)_j / λ``);
    * ``starved``: the feature carries a real share of strength (``strength_share >=``
      :data:`STARVED_MIN_STRENGTH_SHARE`), gets a much smaller share of the response (``response_share <``
      :data:`STARVED_RESPONSE_RATIO` ``x strength_share``), and a *stronger* feature is the one the response goes
      to (``s_j`` below the strength of the feature with the largest response share): Thm. 2's situation, a strong
      feature learned at the expense of a weaker one;
    * ``alignment_label`` (``|corr|`` of the feature's per-example value ``y_i U_ij`` with the label) and one
      ``alignment_<name>`` per attribute (its within-class ``|corr|``, :func:`feature_alignment`);
    * per group ``g``, ``z[g] = Σ_{i in g} U_ij r_i``, the group's contribution to ``z_j`` (they sum to ``z_j``),
      and the group's count, mean margin and accuracy in ``table.attrs["groups"]``.

    ``table.attrs["verdict"]`` says it in sentences: the features that carry 80 % of the response and the starved
    ones, each with the attribute (or the label) it aligns with most.

    Args:
        attributes: name -> ``(n,)`` values (binary or continuous) to align the features with, e.g. the
            spurious attribute and the core one of a shortcut task.

    Returns:
        ``(table, figure)``: a DataFrame with one row per feature, and a figure with the shares (left), the
        alignments (middle) and each group's contribution *per example* (right; means, so that small groups show).
    """
    n = x.shape[0]
    analysis = analysis if analysis is not None else FeatureAnalysis(k=min(k, n)).fit(model, x, y)
    labels = analysis.labels_
    margins = analysis.margins(_model_logits(model, x))
    z = analysis.U_.T @ margins
    strengths = analysis.strengths_
    strength_share = strengths**2 / np.sum(strengths**2)
    response_share = z**2 / max(np.sum(z**2), np.finfo(float).tiny)
    table = pd.DataFrame(
        {
            "feature": np.arange(1, strengths.shape[0] + 1),
            "strength": strengths,
            "strength_share": strength_share,
            "response": z,
            "response_share": response_share,
            "response_per_strength": z / np.where(strengths > 0, strengths, np.nan),
        }
    )
    dominant = int(np.argmax(response_share))
    table["starved"] = (
        (strength_share >= STARVED_MIN_STRENGTH_SHARE)
        & (response_share < STARVED_RESPONSE_RATIO * strength_share)
        & (strengths < strengths[dominant])
    )
    values = labels[:, None] * analysis.U_  # each feature as a function of the input (the label sign removed)
    classes = analysis.class_ids_
    target = labels if analysis.weights_ is None else classes
    table["alignment_label"] = [feature_alignment(values[:, j], target, None) for j in range(values.shape[1])]
    for name, attribute in (attributes or {}).items():
        attribute = _as_numpy(attribute).astype(np.float64).reshape(-1)
        if attribute.shape[0] != n:
            raise ValueError(f"attribute {name!r} must have {n} entries (one per example), got {attribute.shape[0]}")
        table[f"alignment_{name}"] = [
            feature_alignment(values[:, j], attribute, classes) for j in range(values.shape[1])
        ]
    group_ids = np.zeros(n, dtype=np.int64) if groups is None else _as_numpy(groups).astype(np.int64).reshape(-1)
    if group_ids.shape[0] != n:
        raise ValueError(f"groups must have {n} entries (one per example), got {group_ids.shape[0]}")
    present = np.unique(group_ids)
    names = list(group_names) if group_names is not None else [f"group {g}" for g in range(int(present.max()) + 1)]
    if len(names) <= int(present.max()):
        raise ValueError(f"group_names has {len(names)} names but group ids go up to {int(present.max())}")
    group_rows = []
    for g in present:
        mask = group_ids == g
        table[f"z[{names[g]}]"] = analysis.U_[mask].T @ margins[mask]
        group_rows.append(
            {
                "group": names[g],
                "count": int(mask.sum()),
                "mean_margin": float(margins[mask].mean()),
                "accuracy": float((margins[mask] > 0).mean()),
            }
        )
    table.attrs["groups"] = pd.DataFrame(group_rows)
    table.attrs["verdict"] = _verdict(table, list(attributes or {}))
    counts = {names[g]: int((group_ids == g).sum()) for g in present}
    return table, _plot_report(table, [names[g] for g in present], counts, list(attributes or {}))


def _verdict(table: pd.DataFrame, attribute_names: list[str]) -> list[str]:
    """Plain sentences: the features that carry 80 % of the response, and the starved ones, with what they align
    with most (an attribute, or the label)."""

    def aligned(row: pd.Series) -> str:
        candidates = {name: row[f"alignment_{name}"] for name in attribute_names}
        candidates["the label"] = row["alignment_label"]
        best = max(candidates, key=candidates.get)
        shown = best if best == "the label" else f"`{best}`"
        if candidates[best] < ALIGNED:
            return f"aligns with none of them (at most {candidates[best]:.2f}, with {shown})"
        return f"aligns with {shown} ({candidates[best]:.2f})"

    order = table.sort_values("response_share", ascending=False)
    carried, total = [], 0.0
    for _, row in order.iterrows():
        carried.append(row)
        total += row["response_share"]
        if total >= 0.8:
            break
    listing = ", ".join(str(int(row["feature"])) for row in carried)
    sentences = [
        f"Feature{'s' if len(carried) > 1 else ''} {listing} carr{'y' if len(carried) > 1 else 'ies'} "
        f"{100 * total:.0f} % of the response; " + "; ".join(f"{int(r['feature'])} {aligned(r)}" for r in carried) + "."
    ]
    for _, row in table[table["starved"]].iterrows():
        sentences.append(
            f"Feature {int(row['feature'])} ({100 * row['strength_share']:.1f} % of the strength, "
            f"{100 * row['response_share']:.1f} % of the response) {aligned(row)} and is starved."
        )
    if not table["starved"].any():
        sentences.append("No feature is starved by the rule (see starvation_report's docstring).")
    return sentences


def _plot_report(
    table: pd.DataFrame, group_labels: list[str], counts: Mapping[str, int], attribute_names: list[str]
) -> Figure:
    figure = Figure(figsize=(15, 3.8), layout="constrained")
    left, middle, right = figure.subplots(1, 3)
    index = table["feature"].to_numpy()
    width = 0.4
    left.bar(index - width / 2, table["strength_share"], width, label="strength share $s_j^2/\\sum s^2$")
    left.bar(index + width / 2, table["response_share"], width, label="response share $z_j^2/\\sum z^2$")
    for j in index[table["starved"].to_numpy()]:
        left.annotate(
            "starved", (j, 0), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7, color="C3"
        )
    left.set_xlabel("feature j")
    left.set_ylabel("share")
    left.legend(fontsize=8)
    left.set_title("What the network offers vs what it responds to")
    columns = ["alignment_label", *[f"alignment_{name}" for name in attribute_names]]
    alignment = np.array([table[column].to_numpy() for column in columns])
    middle.imshow(alignment, aspect="auto", cmap="Greens", vmin=0, vmax=1)
    middle.set_yticks(range(len(columns)), ["label", *attribute_names])
    middle.set_xticks(range(len(index)), [str(j) for j in index])
    middle.set_xlabel("feature j")
    middle.set_title("|alignment| (within class for attributes)")
    per_example = np.array([table[f"z[{name}]"].to_numpy() / max(1, counts[name]) for name in group_labels])
    limit = float(np.max(np.abs(per_example))) or 1.0
    image = right.imshow(per_example, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit)
    right.set_yticks(range(len(group_labels)), [f"{g} (n = {counts[g]})" for g in group_labels])
    right.set_xticks(range(len(index)), [str(j) for j in index])
    right.set_xlabel("feature j")
    right.set_title("Each group's contribution to $z_j$, per example")
    figure.colorbar(image, ax=right, shrink=0.85)
    return figure

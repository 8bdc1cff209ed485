"""The mechanics every training method shares: batches, optimizers, the step counter, penalty annealing.

A method is an :class:`Algorithm` subclass that overrides only :meth:`Algorithm.objective`. The trainer
(``experiments/train.py``) builds it as ``ALGORITHMS[name](model, hparams, n_groups)`` and calls
:meth:`Algorithm.update` once per optimisation step; there is no training loop here.

Batches
-------
``update`` takes a tuple ``(x, y, group)`` (the format of :meth:`gradstarve.data.base.LabelledData.batch`):

* ``x``: ``(n, ...)`` inputs; ``y``: ``(n,)`` int64 class indices (binary tasks: {0, 1});
* ``group``: ``(n,)`` int64 environment id (Colored MNIST) or group id (CelebA) in ``[0, n_groups)``;
* optionally a 4th element ``index``: ``(n,)`` int64 position of each example in the training set. LfF (its
  per-example loss averages) and JTT's second stage (its error set) need it; other methods ignore it.

``(x, y)`` alone is accepted by methods that use neither groups nor indices (ERM, SD, JTT's first stage); IRM, V-REx
and Group DRO raise a ``ValueError`` without groups, LfF and JTT's second stage without indices. One trainer thus
serves environment-based and group-based data.

Optimisation
------------
Hyperparameters every method reads (see :mod:`gradstarve.hparams` for defaults):

* ``optimizer``: ``"adam"`` or ``"sgd"`` (``"sgd"`` also reads ``momentum``); ``lr``;
* ``weight_decay``: torch's coupled L2. ``torch.optim.SGD``/``Adam`` add ``weight_decay · θ`` to the gradient, the
  gradient of ``weight_decay/2 · ‖θ‖²``; with a mean loss over ``n`` examples this is Eq. 9 with theory
  ``lam = n · weight_decay``. It is applied by the optimizer, so it is **not** rescaled with the loss;
* ``l2_weight``: ``l2_weight · Σ_p ‖p‖²`` (no 1/2, over every trainable parameter of the algorithm) added to the
  loss itself, as the IRM reference code does; unlike ``weight_decay`` it is divided together with the loss when
  IRM / V-REx rescale it.

Every update costs one forward and one backward pass of the model (LfF: of both of its networks).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from gradstarve.hparams import check_hparams as table_check

#: Hyperparameters every algorithm requires.
COMMON_HPARAMS: tuple[str, ...] = ("optimizer", "lr", "weight_decay", "l2_weight")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


# --------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    """A validated batch. ``group`` and ``index`` are ``None`` when the batch did not carry them."""

    x: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _check_ids(tensor: Any, name: str, n: int, upper: int | None) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int64 or tensor.shape != (n,):
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        dtype = tensor.dtype if isinstance(tensor, torch.Tensor) else None
        raise ValueError(f"{name} must be an int64 tensor of shape ({n},), got {shape} with dtype {dtype}")
    if n:
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or (upper is not None and high >= upper):
            limit = f"[0, {upper - 1}]" if upper is not None else ">= 0"
            raise ValueError(f"{name} must lie in {limit}, found values in [{low}, {high}]")
    return tensor


def unpack_batch(
    batch: Sequence[torch.Tensor], n_groups: int, needs_groups: bool = False, method: str = "this method"
) -> Batch:
    """Check a ``(x, y[, group[, index]])`` batch (see the module docstring) and return it as a :class:`Batch`.

    Label values are checked against the model's output later (:func:`gradstarve.penalties.check_labels`).
    """
    if not isinstance(batch, tuple | list) or not 2 <= len(batch) <= 4:
        raise ValueError(
            f"a batch must be a tuple (x, y), (x, y, group) or (x, y, group, index), got "
            f"{type(batch).__name__} of length {len(batch) if isinstance(batch, tuple | list) else '?'}"
        )
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise ValueError(f"x must be a tensor of shape (n, ...), got {type(x).__name__}")
    n = int(x.shape[0])
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (n,):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of class indices with shape ({n},), got {shape}")
    if n == 0:
        raise ValueError("the batch is empty; expected at least one example")
    group = batch[2] if len(batch) >= 3 else None
    if group is None and needs_groups:
        raise ValueError(
            f"{method} needs the environment / group id of every example, but the batch has none: pass batches "
            f"as (x, y, group) with group an int64 tensor of shape ({n},)"
        )
    if group is not None:
        group = _check_ids(group, "group", n, n_groups)
    index = _check_ids(batch[3], "index", n, None) if len(batch) == 4 and batch[3] is not None else None
    return Batch(x, y, group, index)


# --------------------------------------------------------------------------------------------------------------
# Hyperparameters and optimizers
# --------------------------------------------------------------------------------------------------------------
def check_hparams(hparams: Mapping[str, Any], required: Iterable[str], method: str) -> dict[str, Any]:
    """A copy of ``hparams`` after checking that every ``required`` key is present."""
    if not isinstance(hparams, Mapping):
        raise ValueError(f"hparams must be a mapping of names to values, got {type(hparams).__name__}")
    missing = [name for name in required if name not in hparams]
    if missing:
        raise ValueError(
            f"{method} is missing hyperparameters {missing}; start from "
            f"gradstarve.hparams.default_hparams(algorithm, dataset) and override what you need"
        )
    return dict(hparams)


def _positive(hparams: Mapping[str, Any], name: str, allow_zero: bool = False) -> float:
    try:
        value = float(hparams[name])
    except (TypeError, ValueError):
        raise ValueError(f"hyperparameter {name} must be a number, got {hparams[name]!r}") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"hyperparameter {name} must be a finite number {bound}, got {value!r}")
    return value


def build_optimizer(parameters: Iterable[nn.Parameter], hparams: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` (with ``momentum``) from ``hparams`` (see the module docstring)."""
    kind = hparams["optimizer"]
    lr = _positive(hparams, "lr")
    weight_decay = _positive(hparams, "weight_decay", allow_zero=True)
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        if "momentum" not in hparams:
            raise ValueError("optimizer 'sgd' needs the hyperparameter momentum (0 for plain gradient descent)")
        momentum = _positive(hparams, "momentum", allow_zero=True)
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"hyperparameter optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def annealed_weight(step: int, anneal_steps: int, weight: float, weight_before: float = 1.0) -> float:
    """The penalty weight of IRM / V-REx at ``step``: ``weight_before`` while ``step < anneal_steps``, then
    ``weight`` (Arjovsky et al. 2019 and Krueger et al. 2021 reference code: ``weight_before = 1``)."""
    return float(weight) if step >= anneal_steps else float(weight_before)


# --------------------------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Objective:
    """What :meth:`Algorithm.objective` returns for one batch.

    Attributes:
        loss: the differentiable objective, without the ``l2_weight`` term and before rescaling.
        nll: the method's data term on this batch, for logging: the mean cross-entropy (IRM / V-REx: the mean over
            environments of each environment's mean cross-entropy).
        penalty: the method's penalty (unweighted), or ``None``.
        penalty_weight: its weight in ``loss`` at this step.
        scale: the total ``loss + l2`` is divided by this (IRM / V-REx "rescale the entire loss").
        logs: further scalars to report.
    """

    loss: torch.Tensor
    nll: torch.Tensor
    penalty: torch.Tensor | None = None
    penalty_weight: float = 0.0
    scale: float = 1.0
    logs: dict[str, float] = field(default_factory=dict)


class Algorithm(nn.Module):
    """Base class: owns the model, its optimizer(s) and the step counter; subclasses define :meth:`objective`.

    Args:
        model: an ``nn.Module`` mapping inputs ``(n, ...)`` to logits ``(n,)``, ``(n, 1)`` or ``(n, C)``.
        hparams: a mapping holding at least :data:`COMMON_HPARAMS` and the subclass's ``hparam_names``.
        n_groups: number of environments / groups (ids in the batches lie in ``[0, n_groups)``).

    ``state_dict()`` is a complete checkpoint: parameters, buffers, and (as extra state) the step counter, the
    optimizers' states and any per-method state.
    """

    #: The method's name in ``ALGORITHMS`` and the hyperparameter table: hyperparameters are checked against the
    #: table (unknown names and wrong kinds are errors). ``None`` (a user's own subclass): not checked.
    registry_name: ClassVar[str | None] = None
    #: Whether batches must carry environment / group ids.
    needs_groups: ClassVar[bool] = False
    #: Hyperparameters this method reads besides :data:`COMMON_HPARAMS`.
    hparam_names: ClassVar[tuple[str, ...]] = ()
    #: For annealed penalties (IRM, V-REx): the prefix ``p`` of the hyperparameters ``p_lambda``,
    #: ``p_lambda_before``, ``p_anneal_steps``, and the flags ``rescale_loss``, ``reset_optimizer_at_anneal``.
    anneal_prefix: ClassVar[str | None] = None

    def __init__(self, model: nn.Module, hparams: Mapping[str, Any], n_groups: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module mapping x to logits, got {type(model).__name__}")
        if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
            raise ValueError(f"n_groups must be an integer >= 1, got {n_groups!r}")
        self.hparams = check_hparams(hparams, self.required_hparams(), type(self).__name__)
        if self.registry_name is not None:  # names and kinds against the hyperparameter table
            table_check(self.registry_name, self.hparams)
        self.model = model
        self.n_groups = n_groups
        self.num_updates = 0
        self.optimizer = build_optimizer(self.model.parameters(), self.hparams)
        _positive(self.hparams, "l2_weight", allow_zero=True)
        if self.anneal_prefix is not None:
            p = self.anneal_prefix
            _positive(self.hparams, f"{p}_lambda", allow_zero=True)
            _positive(self.hparams, f"{p}_lambda_before", allow_zero=True)
            steps = self.hparams[f"{p}_anneal_steps"]
            if isinstance(steps, bool) or int(steps) != steps or steps < 0:
                raise ValueError(f"hyperparameter {p}_anneal_steps must be an integer >= 0, got {steps!r}")

    @classmethod
    def required_hparams(cls) -> tuple[str, ...]:
        """Every hyperparameter the constructor requires."""
        annealed: tuple[str, ...] = ()
        if cls.anneal_prefix is not None:
            p = cls.anneal_prefix
            annealed = (f"{p}_lambda", f"{p}_lambda_before", f"{p}_anneal_steps")
            annealed += ("rescale_loss", "reset_optimizer_at_anneal")
        return COMMON_HPARAMS + cls.hparam_names + annealed

    def _nonfinite_loss_message(self, batch: Batch, loss_value: float, nll_value: float) -> str:
        """Why the loss is not finite, naming the first cause found: the inputs, the parameters, or divergence."""
        where = f"{type(self).__name__}: the loss is {loss_value} at step {self.num_updates} (nll {nll_value})"
        if batch.x.is_floating_point() and not bool(torch.isfinite(batch.x).all()):
            return f"{where}: the batch's inputs hold NaN or infinity; clean the data"
        bad = [n for n, p in self.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return f"{where}: parameters {', '.join(bad[:3])} are already not finite (an earlier update diverged)"
        return f"{where}: training diverged with finite inputs and parameters; lower the learning rate or the penalty"

    def before_step(self, step: int, *, steps_per_epoch: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        """Called by the trainer before update ``step`` (0-based) with the whole training set: the place for work
        between steps that needs more than a batch (JTT's identification of its error set). Default: nothing."""

    def penalty_switch_step(self) -> int | None:
        """The first step at which the method's full objective applies (its penalty annealed or switched in), or
        ``None`` if it applies from the first step. A run shorter than this trains the plain loss throughout."""
        if self.anneal_prefix is None:
            return None
        return int(self.hparams[f"{self.anneal_prefix}_anneal_steps"]) or None

    # ---------------------------------------------------------------------------------------- to override
    def objective(self, batch: Batch) -> Objective:
        """The method's loss on one batch (one forward pass of the model over the whole batch)."""
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer :meth:`update` steps (LfF has two)."""
        return [self.optimizer]

    def reset_optimizers(self) -> None:
        """Fresh optimizer state (Adam moments, momentum), as DomainBed does when a penalty anneals in."""
        self.optimizer = build_optimizer(self.model.parameters(), self.hparams)

    def method_state(self) -> dict[str, Any]:
        """Per-method state for checkpoints (beyond parameters and registered buffers)."""
        return {}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`method_state`."""

    # ---------------------------------------------------------------------------------------- shared mechanics
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the trained model (gradients are tracked unless the caller disables them)."""
        return self.model(x)

    def penalty_weight(self) -> float:
        """The annealed penalty weight at the current step (IRM, V-REx): ``p_lambda_before`` then ``p_lambda``."""
        p = self.anneal_prefix
        if p is None:
            raise ValueError(f"{type(self).__name__} has no annealed penalty")
        return annealed_weight(
            self.num_updates,
            int(self.hparams[f"{p}_anneal_steps"]),
            self.hparams[f"{p}_lambda"],
            self.hparams[f"{p}_lambda_before"],
        )

    def loss_scale(self, weight: float) -> float:
        """The reference code's "rescale the entire loss": divide by the penalty weight when it exceeds 1."""
        return weight if self.hparams["rescale_loss"] and weight > 1.0 else 1.0

    def l2_term(self) -> torch.Tensor | None:
        """``l2_weight · Σ_p ‖p‖²`` over every trainable parameter, or ``None`` when ``l2_weight = 0``."""
        weight = float(self.hparams["l2_weight"])
        if weight == 0.0:
            return None
        return cast(torch.Tensor, weight * sum(p.square().sum() for p in self.parameters() if p.requires_grad))

    def update(self, batch: Sequence[torch.Tensor]) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the logged values.

        Logged: ``loss`` (the minimised total), ``nll``, ``penalty`` and ``penalty_weight`` (when the method has a
        penalty), ``l2`` (when ``l2_weight > 0``), ``step`` (the 0-based index of this update) and method-specific
        values.

        Raises:
            ValueError: for a malformed batch (see the module docstring).
            FloatingPointError: if the loss is not finite; the parameters are left untouched.
        """
        checked = unpack_batch(batch, self.n_groups, self.needs_groups, type(self).__name__)
        p = self.anneal_prefix
        if (
            p is not None
            and self.hparams["reset_optimizer_at_anneal"]
            and self.num_updates == int(self.hparams[f"{p}_anneal_steps"])
        ):
            self.reset_optimizers()
        objective = self.objective(checked)
        l2 = self.l2_term()
        total = objective.loss if l2 is None else objective.loss + l2
        if objective.scale != 1.0:
            total = total / objective.scale
        # One device-to-host copy for every logged tensor (each float() would be a synchronisation on a GPU).
        logged = [total, objective.nll, *(t for t in (objective.penalty, l2) if t is not None)]
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in logged])
        values = torch.stack([t.detach().to(dtype).reshape(()) for t in logged]).tolist()
        loss_value, nll_value = values[0], values[1]
        if loss_value != loss_value or abs(loss_value) == float("inf"):
            raise FloatingPointError(self._nonfinite_loss_message(checked, loss_value, nll_value))
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for optimizer in self.optimizers():
            optimizer.step()
        logs = {"loss": loss_value, "nll": nll_value, "step": float(self.num_updates)}
        rest = iter(values[2:])
        if objective.penalty is not None:
            logs["penalty"] = next(rest)
            logs["penalty_weight"] = float(objective.penalty_weight)
        if l2 is not None:
            logs["l2"] = next(rest)
        logs.update(objective.logs)
        self.num_updates += 1
        return logs

    # ---------------------------------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "num_updates": self.num_updates,
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers()],
            "method": self.method_state(),
        }

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.load_method_state(state.get("method", {}))
        for optimizer, saved in zip(self.optimizers(), state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)

"""Just Train Twice, JTT (Liu et al. 2021): train ERM, then retrain with the first model's errors up-weighted."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradstarve.algorithms.base import Algorithm, Batch, Objective, _positive
from gradstarve.penalties import check_labels, is_binary, per_example_cross_entropy


class JTT(Algorithm):
    """JTT in two stages, driven by the trainer.

    1. **Identification stage** (``stage == 1``): plain ERM. The trainer trains for ``T`` epochs
       (``hparams["jtt_first_stage_epochs"]``; full-batch data: one epoch is one step) and then calls
       :meth:`identify` on the whole training set. That evaluates the stage-1 model, takes the **error set**
       ``E = {i : argmax ŷ_i != y_i}`` (binary: ``(ŷ_i > 0) != y_i``), restores the model to its initial parameters
       (the second model is trained "from scratch", from the same initialisation; ``jtt_reset_model``), rebuilds the
       optimizer and switches to stage 2.
    2. **Final stage** (``stage == 2``): ERM on the training set with the examples of ``E`` up-weighted by
       ``λ_up = jtt_upweight``. JTT up-*samples* ``E`` ``λ_up`` times; we use the equivalent weights:
       ``loss = mean_batch(w_i CE_i) / mean_train(w)`` with ``w_i = λ_up`` on ``E`` and 1 elsewhere, whose expectation
       under uniform sampling equals the up-sampled objective (exactly it for full batches). Batches must then carry
       per-example indices, ``(x, y, group, index)``; the trainer keeps sampling uniformly.

    The error set is the boolean buffer-like tensor :attr:`error_set` (indexed by training-set position) and is
    saved in ``state_dict``.

    Hyperparameters: ``jtt_upweight`` (λ_up >= 1; CelebA: 50), ``jtt_reset_model``; ``jtt_first_stage_epochs`` (T;
    CelebA: 1) is read by the trainer only.
    """

    registry_name = "jtt"

    hparam_names = ("jtt_upweight", "jtt_reset_model")

    def __init__(self, model: nn.Module, hparams: Mapping[str, Any], n_groups: int) -> None:
        super().__init__(model, hparams, n_groups)
        self.upweight = _positive(self.hparams, "jtt_upweight")
        if self.upweight < 1:
            raise ValueError(f"hyperparameter jtt_upweight (λ_up) must be >= 1, got {self.upweight!r}")
        self.stage = 1
        self.error_set = torch.zeros(0, dtype=torch.bool)
        self._mean_weight = 1.0
        self._initial_state = copy.deepcopy(model.state_dict()) if self.hparams["jtt_reset_model"] else None

    def method_state(self) -> dict[str, Any]:
        # The initial parameters travel with a stage-1 checkpoint: identify() restores them later.
        return {
            "stage": self.stage,
            "error_set": self.error_set,
            "mean_weight": self._mean_weight,
            "initial_state": self._initial_state if self.stage == 1 else None,
        }

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.error_set = state["error_set"].clone()
        self._mean_weight = float(state["mean_weight"])
        if state.get("initial_state") is not None and self._initial_state is not None:
            self._initial_state = copy.deepcopy(state["initial_state"])

    @torch.no_grad()
    def before_step(self, step: int, *, steps_per_epoch: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        """After ``jtt_first_stage_epochs`` epochs of stage 1 (when the trainer gives it), identify the error set
        on the whole training set and switch to stage 2."""
        epochs = self.hparams.get("jtt_first_stage_epochs")
        if self.stage == 1 and epochs is not None and step == int(epochs) * steps_per_epoch:
            self.identify(train_x, train_y)

    def identify(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, batch_size: int = 1024
    ) -> torch.Tensor:
        """End stage 1: find the stage-1 model's errors on the training set and switch to stage 2.

        Args:
            x: ``(N, ...)`` training inputs (evaluated in chunks of ``batch_size``, in eval mode).
            y: ``(N,)`` int64 labels.
            index: ``(N,)`` training-set positions of the rows (default ``arange(N)``); stage-2 batches use these.
            batch_size: examples per forward pass.

        Returns:
            ``(N,)`` bool, True for the examples in the error set (in the order of ``x``).
        """
        if self.stage != 1:
            raise ValueError("identify() ends stage 1 and was already called; JTT is in stage 2")
        n = int(x.shape[0])
        if n == 0:
            raise ValueError("identify() needs the training set, got no examples")
        if index is None:
            index = torch.arange(n, device=y.device)
        if index.dtype != torch.int64 or index.shape != (n,) or int(index.min()) < 0:
            raise ValueError(f"index must be an int64 tensor of shape ({n},) with values >= 0")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        was_training = self.model.training
        self.model.eval()
        try:
            logits = torch.cat([self.model(x[start : start + batch_size]) for start in range(0, n, int(batch_size))])
        finally:
            self.model.train(was_training)
        check_labels(logits, y)
        predicted = (logits.reshape(-1) > 0).long() if is_binary(logits) else logits.argmax(dim=1)
        errors = predicted != y
        self.error_set = torch.zeros(int(index.max()) + 1, dtype=torch.bool, device=y.device)
        self.error_set[index] = errors
        self._mean_weight = 1.0 + (self.upweight - 1.0) * float(errors.double().mean())
        if self._initial_state is not None:
            self.model.load_state_dict(self._initial_state)
        self.reset_optimizers()
        self.stage = 2
        return errors

    def objective(self, batch: Batch) -> Objective:
        losses = per_example_cross_entropy(self.model(batch.x), batch.y)
        nll = losses.mean()
        if self.stage == 1:
            return Objective(nll, nll, logs={"stage": 1.0})
        if batch.index is None:
            raise ValueError(
                "JTT's second stage up-weights its error set by example and needs the index of every example: "
                "pass batches as (x, y, group, index)"
            )
        if int(batch.index.max()) >= self.error_set.shape[0]:
            raise ValueError(
                f"index {int(batch.index.max())} lies outside the training set given to identify() "
                f"({self.error_set.shape[0]} examples)"
            )
        in_error_set = self.error_set.to(batch.index.device)[batch.index]
        weights = torch.where(in_error_set, self.upweight, 1.0).to(losses.dtype)
        loss = (weights * losses).mean() / self._mean_weight
        return Objective(loss, nll, logs={"stage": 2.0, "error_set_fraction": float(in_error_set.double().mean())})


__all__ = ["JTT"]

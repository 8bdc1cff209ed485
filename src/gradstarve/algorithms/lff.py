"""Learning from Failure, LfF (Nam et al. 2020): a deliberately biased network re-weights a debiased one."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradstarve.algorithms.base import Algorithm, Batch, Objective, _positive, build_optimizer
from gradstarve.losses import generalized_cross_entropy
from gradstarve.penalties import num_classes, per_example_cross_entropy


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` whose layers are re-initialised by their ``reset_parameters`` from ``seed``.

    Layers' ``reset_parameters`` draw from torch's global generator and take none of their own, so the draw runs
    inside ``torch.random.fork_rng``: the caller's random stream is restored afterwards and is never advanced.
    The copy is re-initialised on the CPU, then moved back to the model's device. Note that this gives PyTorch's
    default initialisation of each layer (e.g. Kaiming-uniform ``nn.Linear``), whatever scheme built ``model``;
    pass LfF a ``bias_model`` for another one.

    Raises:
        ValueError: if no submodule of ``model`` has a ``reset_parameters`` method.
    """
    clone = copy.deepcopy(model)
    device = next((p.device for p in clone.parameters()), torch.device("cpu"))
    clone = clone.to("cpu")
    resettable = [m for m in clone.modules() if callable(getattr(m, "reset_parameters", None))]
    if not resettable:
        raise ValueError(
            f"cannot re-initialise a copy of {type(model).__name__}: none of its layers has reset_parameters(); "
            f"pass LfF an independently initialised bias_model"
        )
    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(int(seed))
        for module in resettable:
            module.reset_parameters()
    return clone.to(device)


class LfF(Algorithm):
    """LfF: train a biased network ``f_B`` with the generalized cross-entropy and the model ``f_D`` with
    ``W(x) · CE(f_D(x), y)``, ``W(x) = CE_B / (CE_B + CE_D)`` (Nam et al. 2020, Algorithm 1).

    As in the reference code, ``CE_B`` and ``CE_D`` are per-example exponential moving averages (decay
    ``lff_ema``: ``a <- ema · a + (1 - ema) · CE``, started at the first value seen), each divided by its maximum
    over the training examples of the same class seen so far, and ``W`` uses ``+1e-8`` in the denominator. Both
    networks take a step on ``mean GCE_q(f_B) + mean W · CE(f_D)`` every update, each with its own optimizer built
    from the same hyperparameters. :meth:`predict` uses ``f_D`` (the ``model`` passed in).

    Batches must carry per-example indices, ``(x, y, group, index)`` (``group`` may be ``None``): the moving
    averages are kept per training example. Their buffers grow to the largest index seen.

    Args:
        model: the debiased network ``f_D``.
        hparams: common hyperparameters plus ``lff_q`` (q of the GCE, 0.7 in the paper) and ``lff_ema`` (0.7).
            ``seed`` seeds the biased network's initialisation unless ``seed`` or ``bias_model`` is given.
        n_groups: accepted for the common interface; LfF does not use groups.
        bias_model: ``f_B``; default: a re-initialised copy of ``model`` (:func:`reinitialised_copy`).
        seed: overrides ``hparams["seed"]``.

    Cost per update: a forward and backward pass of each network, plus ``O(N)`` for the class-wise maxima over the
    ``N`` examples seen.
    """

    registry_name = "lff"

    hparam_names = ("lff_q", "lff_ema")

    def __init__(
        self,
        model: nn.Module,
        hparams: Mapping[str, Any],
        n_groups: int,
        *,
        bias_model: nn.Module | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, hparams, n_groups)
        self.q = _positive(self.hparams, "lff_q")
        if self.q > 1:
            raise ValueError(f"hyperparameter lff_q must lie in (0, 1], got {self.q!r}")
        self.ema = _positive(self.hparams, "lff_ema", allow_zero=True)
        if self.ema >= 1:
            raise ValueError(f"hyperparameter lff_ema must lie in [0, 1), got {self.ema!r}")
        if bias_model is None:
            if seed is None and "seed" not in self.hparams:
                raise ValueError("LfF needs hparams['seed'] (or seed=..., or bias_model=...) to initialise f_B")
            bias_model = reinitialised_copy(model, int(self.hparams["seed"] if seed is None else seed))
        if bias_model is model:
            raise ValueError("bias_model must be a separate network from model")
        self.bias_model = bias_model
        self.bias_optimizer = build_optimizer(self.bias_model.parameters(), self.hparams)
        self._ema_b = torch.zeros(0)
        self._ema_d = torch.zeros(0)
        self._labels = torch.zeros(0, dtype=torch.int64)
        self._seen = torch.zeros(0, dtype=torch.bool)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, self.bias_optimizer]

    def reset_optimizers(self) -> None:
        super().reset_optimizers()
        self.bias_optimizer = build_optimizer(self.bias_model.parameters(), self.hparams)

    def method_state(self) -> dict[str, Any]:
        return {"ema_b": self._ema_b, "ema_d": self._ema_d, "labels": self._labels, "seen": self._seen}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        self._ema_b, self._ema_d = state["ema_b"].clone(), state["ema_d"].clone()
        self._labels, self._seen = state["labels"].clone(), state["seen"].clone()

    def _grow(self, size: int, like: torch.Tensor) -> None:
        if self._ema_b.shape[0] >= size and self._ema_b.device == like.device and self._ema_b.dtype == like.dtype:
            return
        extra = max(0, size - self._ema_b.shape[0])

        def grown(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            tensor = tensor.to(device=like.device, dtype=dtype)
            return torch.cat([tensor, torch.zeros(extra, dtype=dtype, device=like.device)])

        self._ema_b, self._ema_d = grown(self._ema_b, like.dtype), grown(self._ema_d, like.dtype)
        self._labels, self._seen = grown(self._labels, torch.int64), grown(self._seen, torch.bool)

    def _relative_difficulty(
        self, ce_b: torch.Tensor, ce_d: torch.Tensor, y: torch.Tensor, index: torch.Tensor, classes: int
    ) -> torch.Tensor:
        """``W = CE_B / (CE_B + CE_D + 1e-8)`` from class-normalised per-example moving averages (detached)."""
        self._grow(int(index.max()) + 1, ce_b)
        seen = self._seen[index]
        for average, value in ((self._ema_b, ce_b), (self._ema_d, ce_d)):
            # The first value seen initialises the average (reference: alpha · 0 + (1 - alpha · updated) · value).
            average[index] = torch.where(seen, self.ema * average[index] + (1 - self.ema) * value, value)
        self._seen[index] = True
        self._labels[index] = y
        normalised = []
        for average in (self._ema_b, self._ema_d):
            class_max = torch.zeros(classes, dtype=average.dtype, device=average.device).scatter_reduce(
                0, self._labels[self._seen], average[self._seen], reduce="amax"
            )
            normalised.append(average[index] / class_max[y])
        return normalised[0] / (normalised[0] + normalised[1] + 1e-8)

    def objective(self, batch: Batch) -> Objective:
        if batch.index is None:
            raise ValueError(
                "LfF keeps per-example loss averages and needs the index of every example: pass batches as "
                "(x, y, group, index) with index an int64 tensor of training-set positions"
            )
        logits_d = self.model(batch.x)
        logits_b = self.bias_model(batch.x)
        ce_d = per_example_cross_entropy(logits_d, batch.y)
        ce_b = per_example_cross_entropy(logits_b, batch.y)
        with torch.no_grad():
            classes = num_classes(logits_d)
            weight = self._relative_difficulty(ce_b.detach(), ce_d.detach(), batch.y, batch.index, classes)
        loss_b = generalized_cross_entropy(logits_b, batch.y, self.q)
        loss_d = (weight * ce_d).mean()
        logs = {
            "bias_nll": float(ce_b.detach().mean()),
            "bias_gce": float(loss_b.detach()),
            "mean_weight": float(weight.mean()),
        }
        return Objective(loss_b + loss_d, ce_d.mean(), logs=logs)

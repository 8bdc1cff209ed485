"""Fully connected networks (the paper's two-moons and Colored MNIST models)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """``in_features -> hidden[0] -> ... -> hidden[-1] -> out_features`` with an element-wise activation.

    Layers are a flat ``nn.Sequential`` of ``Linear``, optional ``BatchNorm1d``, activation and optional ``Dropout``
    (in that order), so that the layer-wise NTK in :mod:`gradstarve.ntk` can walk them. Inputs of any shape
    ``(n, ...)`` are flattened to ``(n, in_features)``.

    Args:
        in_features: size of the flattened input (two-moons: 2; Colored MNIST: 2 x 14 x 14 = 392).
        hidden: widths of the hidden layers (two-moons: (500,); Colored MNIST: (300, 300)).
        out_features: number of outputs (1 for a binary logit).
        activation: a key of :data:`ACTIVATIONS`.
        dropout: dropout probability after each hidden activation (0 disables it).
        batch_norm: insert ``BatchNorm1d`` after each hidden linear layer.
        bias: whether the linear layers have biases.
        init: ``"default"`` (PyTorch's) or ``"xavier"`` (Xavier-uniform weights and zero biases, as in the IRM /
            Colored MNIST reference code).
        generator: a ``torch.Generator`` for the initialisation; without one the global RNG is used.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (300, 300),
        out_features: int = 1,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        bias: bool = True,
        init: str = "default",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if init not in ("default", "xavier"):
            raise ValueError(f"init must be 'default' or 'xavier', got {init!r}")
        widths = [int(in_features), *(int(h) for h in hidden), int(out_features)]
        if any(width < 1 for width in widths):
            raise ValueError(f"every layer width must be >= 1, got {widths}")
        self.in_features, self.out_features = widths[0], widths[-1]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            linear = nn.Linear(fan_in, fan_out, bias=bias)
            _initialise(linear, init, generator)
            layers.append(linear)
            if i < len(widths) - 2:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(fan_out))
                layers.append(ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, ...)`` -> ``(n, out_features)``."""
        return self.layers(x.reshape(x.shape[0], -1))

    def ntk_layers(self) -> list[nn.Module]:
        """The modules this network applies, in order, to its flattened input: the protocol by which
        :func:`gradstarve.ntk.linear_stack` recognises a plain stack (the maths layer never imports models)."""
        return list(self.layers)


def _initialise(linear: nn.Linear, init: str, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        if init == "xavier":
            bound = (6.0 / (linear.in_features + linear.out_features)) ** 0.5
            linear.weight.uniform_(-bound, bound, generator=generator)
            if linear.bias is not None:
                linear.bias.zero_()
        else:  # PyTorch's default (Kaiming-uniform with a = √5), drawn from ``generator``
            bound = 1.0 / linear.in_features**0.5
            linear.weight.uniform_(-bound, bound, generator=generator)
            if linear.bias is not None:
                linear.bias.uniform_(-bound, bound, generator=generator)

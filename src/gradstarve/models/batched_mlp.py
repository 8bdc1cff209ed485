"""Several independent MLPs evaluated as one batched computation (stacked weights, ``torch.baddbmm``).

Used to train the paper's 10 two-moons seeds together (Fig. 2-3): every layer of the ``S`` networks runs as one
batched matrix product, so 10 small networks cost little more than one. Each network keeps its own parameters,
data, batch-norm statistics and dropout masks; nothing is shared, so training the stack with an element-wise
optimiser (SGD with momentum, weight decay, Adam) on the *sum* of the per-network losses is exactly training each
network on its own loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from gradstarve.models.mlp import ACTIVATIONS, MLP


class BatchedMLP(nn.Module):
    """``S`` MLPs with identical architecture and separate parameters; input ``(S, n, d_in)``, output ``(S, n, d_out)``.

    The architecture mirrors :class:`~gradstarve.models.MLP`: per hidden layer ``Linear -> [BatchNorm] ->
    activation -> [Dropout]``. Build it from existing networks with :meth:`from_models` (to start from their exact
    initialisations) and get network ``s`` back with :meth:`model`.

    Args:
        n_models: ``S``.
        in_features, hidden, out_features, activation, dropout, batch_norm, bias: as for :class:`MLP`.
    """

    def __init__(
        self,
        n_models: int,
        in_features: int,
        hidden: Sequence[int] = (500,),
        out_features: int = 1,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.n_models = n_models
        self.widths = [int(in_features), *(int(h) for h in hidden), int(out_features)]
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]()
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.has_bias = bias
        self.weights = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(n_models, fan_out, fan_in))
                for fan_in, fan_out in itertools.pairwise(self.widths)
            ]
        )
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(n_models, fan_out)) for fan_out in self.widths[1:]] if bias else []
        )
        hidden_widths = self.widths[1:-1]
        self.norm_weights = nn.ParameterList(
            [nn.Parameter(torch.ones(n_models, width)) for width in hidden_widths] if batch_norm else []
        )
        self.norm_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(n_models, width)) for width in hidden_widths] if batch_norm else []
        )
        for i, width in enumerate(hidden_widths if batch_norm else []):
            self.register_buffer(f"running_mean_{i}", torch.zeros(n_models, width))
            self.register_buffer(f"running_var_{i}", torch.ones(n_models, width))

    @classmethod
    def from_models(cls, models: Sequence[MLP]) -> BatchedMLP:
        """Stack the parameters (and batch-norm statistics) of ``models``, which must share one architecture."""
        if not models:
            raise ValueError("need at least one model to stack")
        first = models[0]
        linears = [m for m in first.layers if isinstance(m, nn.Linear)]
        norms = [m for m in first.layers if isinstance(m, nn.BatchNorm1d)]
        dropouts = [m.p for m in first.layers if isinstance(m, nn.Dropout)]
        activations = [m for m in first.layers if type(m) in ACTIVATIONS.values()]
        activation = next((k for k, v in ACTIVATIONS.items() if activations and type(activations[0]) is v), "relu")
        batched = cls(
            len(models),
            first.in_features,
            [linear.out_features for linear in linears[:-1]],
            first.out_features,
            activation,
            dropouts[0] if dropouts else 0.0,
            bool(norms),
            linears[0].bias is not None,
        ).to(linears[0].weight.dtype)
        signature = [type(m) for m in first.layers]
        with torch.no_grad():
            for s, model in enumerate(models):
                if [type(m) for m in model.layers] != signature:
                    raise ValueError(f"model {s} has a different architecture from model 0")
                model_linears = [m for m in model.layers if isinstance(m, nn.Linear)]
                for layer, linear in enumerate(model_linears):
                    batched.weights[layer][s].copy_(linear.weight)
                    if linear.bias is not None:
                        batched.biases[layer][s].copy_(linear.bias)
                for layer, norm in enumerate(m for m in model.layers if isinstance(m, nn.BatchNorm1d)):
                    batched.norm_weights[layer][s].copy_(norm.weight)
                    batched.norm_biases[layer][s].copy_(norm.bias)
                    getattr(batched, f"running_mean_{layer}")[s].copy_(norm.running_mean)
                    getattr(batched, f"running_var_{layer}")[s].copy_(norm.running_var)
        return batched

    def model(self, s: int) -> MLP:
        """Network ``s`` as a standalone :class:`MLP` (a copy, in this module's dtype and mode)."""
        if not 0 <= s < self.n_models:
            raise ValueError(f"s must lie in 0..{self.n_models - 1}, got {s}")
        single = MLP(
            self.widths[0],
            self.widths[1:-1],
            self.widths[-1],
            self.activation_name,
            self.dropout,
            self.batch_norm,
            self.has_bias,
        ).to(self.weights[0].dtype)
        with torch.no_grad():
            for layer, linear in enumerate(m for m in single.layers if isinstance(m, nn.Linear)):
                linear.weight.copy_(self.weights[layer][s])
                if linear.bias is not None:
                    linear.bias.copy_(self.biases[layer][s])
            for layer, norm in enumerate(m for m in single.layers if isinstance(m, nn.BatchNorm1d)):
                norm.weight.copy_(self.norm_weights[layer][s])
                norm.bias.copy_(self.norm_biases[layer][s])
                norm.running_mean.copy_(getattr(self, f"running_mean_{layer}")[s])
                norm.running_var.copy_(getattr(self, f"running_var_{layer}")[s])
        return single.train(self.training)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(S, n, ...)`` -> ``(S, n, out_features)``. ``generator`` draws the dropout masks (training mode)."""
        if x.ndim < 3 or x.shape[0] != self.n_models:
            raise ValueError(f"x must have shape ({self.n_models}, n, ...), got {tuple(x.shape)}")
        h = x.reshape(self.n_models, x.shape[1], -1)
        last = len(self.weights) - 1
        for layer, weight in enumerate(self.weights):
            if layer == last and weight.shape[1] == 1:
                # one output: a weighted sum over the last hidden layer. As a batched product it is a degenerate
                # (n x d) @ (d x 1) whose backward (an outer product and a transposed matrix-vector product) ran
                # ~1.4x slower per step than this broadcast (two moons, 10 x 300 x 500, 2 threads)
                h = (h * weight).sum(-1, keepdim=True)
                return h + self.biases[layer].unsqueeze(1) if self.has_bias else h
            transposed = weight.transpose(1, 2)
            if self.has_bias:
                h = torch.baddbmm(self.biases[layer].unsqueeze(1), h, transposed)
            else:
                h = torch.bmm(h, transposed)
            if layer == last:
                break
            if self.batch_norm:
                h = self._normalise(h, layer)
            h = self.activation(h)
            if self.dropout > 0 and self.training:
                keep = torch.bernoulli(torch.full_like(h, 1 - self.dropout), generator=generator)
                h = h * keep / (1 - self.dropout)
        return h

    def _normalise(self, h: torch.Tensor, layer: int, eps: float = 1e-5, momentum: float = 0.1) -> torch.Tensor:
        """Batch norm per network, like ``nn.BatchNorm1d``: batch statistics (biased variance) in training, with the
        running statistics (unbiased variance) updated; running statistics in eval mode."""
        running_mean = getattr(self, f"running_mean_{layer}")
        running_var = getattr(self, f"running_var_{layer}")
        if self.training:
            mean = h.mean(dim=1)
            var = h.var(dim=1, unbiased=False)
            with torch.no_grad():
                n = h.shape[1]
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * n / max(n - 1, 1))
        else:
            mean, var = running_mean, running_var
        normalised = (h - mean.unsqueeze(1)) / torch.sqrt(var.unsqueeze(1) + eps)
        return normalised * self.norm_weights[layer].unsqueeze(1) + self.norm_biases[layer].unsqueeze(1)

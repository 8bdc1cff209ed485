"""An MLP whose first layer multiplies only the one non-zero input channel of each example (Colored MNIST).

Colored MNIST puts each digit in one of two colour channels and leaves the other channel exactly zero, so half of
the first layer's multiply-adds in a plain :class:`~gradstarve.models.mlp.MLP` are multiplications by zero. For an
example whose only non-zero channel is ``c``,

    ``W x + b = W[:, c·d : (c+1)·d] x_c + b``          (``x`` flattened channel by channel, ``d`` values per channel),

so :class:`ChannelSparseMLP` groups the examples by their active channel and computes one ``(n_c, d) @ (d, h)``
product per channel: the first layer costs ``n·d·h`` instead of ``n·C·d·h`` multiply-adds (``C = 2``: half), which
is 28 % of the forward pass and of the weight gradients of the paper's 392-300-300-1 network. The rest of the
network runs on the grouped rows; the output is put back in the input's row order by one gather of the ``(n, 1)``
logits. In exact arithmetic this is the plain MLP's function and gradient; in floating point the first layer sums
``d`` instead of ``C·d`` terms (the other ``(C-1)·d`` being exact zeros) in a different order, so results agree to
float32 rounding (tests: outputs and gradients to 1e-5 relative, and a short training run).

When the fast path is used
--------------------------
Finding each example's channel and gathering the rows costs one pass over ``x`` (and two host synchronisations).
In training mode every input is grouped, and the grouping of the last input is cached: while ``forward`` sees the
*same tensor object* (unchanged since, by its version counter), it reuses it, so a full-batch trainer pays the pass
once per process. Which path a step takes depends only on the input and the mode, never on what the model saw
before, so a run resumed in a new process computes exactly what the uninterrupted run computed. Evaluation (eval
mode) and inputs where some example has two non-zero channels (gray images: both channels ``image / 2``) take the
plain dense path. Any input is therefore handled correctly; only the speed differs.

Row blocks (CPU)
----------------
Rows are independent, so on the CPU the network runs on blocks of rows (``block_bytes`` of activations per hidden
layer: 2,048 rows of 300 float32 values, 4,096 under bfloat16 autocast) instead of all 45,000 at once. A block's
activations stay in the cache from one layer to the next, and the tall, thin matrix products run about 1.5 times
faster in blocks than whole (measured: 45,000 x 300 x 300 at 95 GFLOP/s whole, 150 in blocks of 2,048, on 2
cores). Each output row is computed exactly as before; only the sums over rows in the weight gradients are
accumulated block by block (float rounding). On a GPU the whole batch is one block (one kernel per layer).

The hidden ReLUs run in place (``nn.ReLU(inplace=True)``: the linear layers' backward does not need their outputs),
which saves one allocation and pass per hidden layer; the numbers are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradstarve.models.mlp import MLP

#: Activation bytes per hidden layer and row block on the CPU (2,048 rows of 300 float32 values).
BLOCK_BYTES = 2048 * 300 * 4


@dataclass(frozen=True)
class ChannelGrouping:
    """The rows of one input grouped by their non-zero channel.

    Attributes:
        inputs: one ``(n_c, d)`` tensor per channel ``c``: the channel-``c`` values of the examples whose active
            channel is ``c`` (examples with no non-zero value are put in channel 0), in input order.
        inverse: ``(n,)`` int64: row ``i`` of the input is row ``inverse[i]`` of the grouped rows.
    """

    inputs: tuple[torch.Tensor, ...]
    inverse: torch.Tensor
    _casts: dict[torch.dtype, tuple[torch.Tensor, ...]] = field(default_factory=dict, compare=False, repr=False)

    def inputs_as(self, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
        """:attr:`inputs` cast to ``dtype`` (``None``: as they are), cast once and kept: under autocast the cast of
        the whole training set is then done once per run instead of once per step (the same values)."""
        if dtype is None or dtype == self.inputs[0].dtype:
            return self.inputs
        if dtype not in self._casts:
            self._casts[dtype] = tuple(rows.to(dtype) for rows in self.inputs)
        return self._casts[dtype]


def group_by_active_channel(x: torch.Tensor, channels: int) -> ChannelGrouping | None:
    """Group the rows of ``x`` (``(n, channels, ...)`` or ``(n, channels · d)``) by their only non-zero channel.

    Returns ``None`` when some example has more than one non-zero channel (then no grouping is exact). Cost: one
    pass over ``x``, an argsort of ``n`` channel ids, one gather of ``n·d`` values, and two host synchronisations.
    """
    n = x.shape[0]
    if channels < 1 or (x.numel() // max(n, 1)) % channels:
        raise ValueError(f"x with {x.numel() // max(n, 1)} values per example cannot be split into {channels} channels")
    flat = x.reshape(n, channels, -1)
    active = flat.ne(0).any(dim=2)
    if bool((active.sum(dim=1) > 1).any()):
        return None
    channel = active.long().argmax(dim=1)  # rows with no active channel: 0 (their product is 0 anyway)
    order = torch.argsort(channel, stable=True)
    counts = torch.bincount(channel, minlength=channels).tolist()
    inputs, start = [], 0
    for c, count in enumerate(counts):
        inputs.append(flat[order[start : start + count], c].contiguous())
        start += count
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=x.device)
    return ChannelGrouping(tuple(inputs), inverse)


class ChannelSparseMLP(MLP):
    """:class:`~gradstarve.models.mlp.MLP` with a first layer that skips all-zero input channels (module docstring).

    Same parameters, initialisation (given the same generator) and ``state_dict`` keys as ``MLP`` with the same
    arguments, so checkpoints and tools written for ``MLP`` work unchanged.

    Args:
        channels: number of input channels ``C``; the flattened input is ``C`` blocks of ``in_features / C``
            values (Colored MNIST: ``x`` of shape ``(n, 2, 14, 14)``, ``C = 2``).
        in_features, hidden, out_features, activation, init, generator, bias: as for ``MLP``. Dropout and batch
            normalisation are not supported (the paper's Colored MNIST model has neither).
        block_bytes: activation bytes per hidden layer of one row block on the CPU (module docstring); ``None``:
            no blocks.
    """

    def __init__(
        self,
        channels: int,
        in_features: int,
        hidden: Sequence[int] = (300, 300),
        out_features: int = 1,
        activation: str = "relu",
        bias: bool = True,
        init: str = "default",
        generator: torch.Generator | None = None,
        block_bytes: int | None = BLOCK_BYTES,
    ) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1 or in_features % channels:
            raise ValueError(
                f"channels must be a positive integer dividing in_features ({in_features}), got {channels!r}"
            )
        super().__init__(in_features, hidden, out_features, activation, bias=bias, init=init, generator=generator)
        if block_bytes is not None and block_bytes < 1:
            raise ValueError(f"block_bytes must be a positive number of bytes or None, got {block_bytes!r}")
        self.channels = channels
        self.block_bytes = block_bytes
        self.width = max((int(h) for h in hidden), default=out_features)
        for module in self.layers:
            if isinstance(module, nn.ReLU):
                module.inplace = True
        self._grouping: tuple[torch.Tensor, int, ChannelGrouping | None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, ...)`` -> ``(n, out_features)``, the plain MLP's function (see the module docstring)."""
        grouping = self._grouping_for(x)
        block = self.block_rows(x)
        if grouping is None:
            if block is None or x.shape[0] <= block:
                return super().forward(x)
            return torch.cat([super(ChannelSparseMLP, self).forward(x[i : i + block]) for i in range(0, len(x), block)])
        first: nn.Linear = self.layers[0]
        width = first.in_features // self.channels
        device = x.device.type
        reduced = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        outputs = []
        for c, rows in enumerate(grouping.inputs_as(reduced)):
            weight = first.weight[:, c * width : (c + 1) * width].t()
            if reduced is not None:  # cast once per step, not once per block (autocast caches only whole leaves)
                weight = weight.to(reduced)
            step = block or max(1, rows.shape[0])
            for start in range(0, rows.shape[0], step):
                part = rows[start : start + step]
                hidden = part @ weight if first.bias is None else torch.addmm(first.bias, part, weight)
                outputs.append(self.layers[1:](hidden))
        return torch.cat(outputs).index_select(0, grouping.inverse)

    def block_rows(self, x: torch.Tensor) -> int | None:
        """Rows per block for input ``x``: ``None`` (one block) off the CPU or without ``block_bytes``."""
        if self.block_bytes is None or x.device.type != "cpu":
            return None
        reduced = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.half)
        element = 2 if reduced else x.element_size()
        return max(1, self.block_bytes // (self.width * element))

    def _grouping_for(self, x: torch.Tensor) -> ChannelGrouping | None:
        if not self.training:
            return None
        version = x._version
        cached = self._grouping
        if cached is not None and cached[0] is x and cached[1] == version:
            return cached[2]
        grouping = group_by_active_channel(x.detach(), self.channels)
        self._grouping = (x, version, grouping)
        return grouping

    def __getstate__(self) -> dict[str, Any]:
        # Copies (deepcopy, pickling) must not drag the cached input along.
        parent = getattr(super(), "__getstate__", None)  # nn.Module's, or object's (Python >= 3.11)
        state = dict(parent() if parent is not None else self.__dict__)
        state["_grouping"] = None
        return state

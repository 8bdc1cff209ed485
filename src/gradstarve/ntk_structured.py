"""Layer-wise empirical NTK of networks built from Linear, Conv1d/2d, BatchNorm, LayerNorm and GroupNorm layers.

The NTK is a sum over parameter tensors: ``K(x, x') = Σ_l ⟨∂f(x)/∂θ_l, ∂f(x')/∂θ_l⟩``. For each parametrised layer
``l`` the per-example gradient of output ``a`` follows from the layer's input ``h`` and the back-propagated signal
``δ_a = ∂f_a/∂(layer output)`` (structured derivatives, as in Novak et al. 2022, "Fast Finite Width Neural Tangent
Kernel"), without forming the ``(n, P)`` Jacobian of the whole network:

* ``nn.Linear`` on ``(n, d)`` inputs: ``∂f_a/∂W = δ_a h^T`` and ``∂f_a/∂b = δ_a``, so its term is the factored
  ``(h h'^T + 1) ⊙ (δ_a · δ'_b)``: ``O(n (d_in + c d_out))`` memory, never ``d_in x d_out`` per example (a
  one-output layer, whose gradient is no larger than its factors, is materialised like the layers below);
* ``nn.Conv1d`` / ``nn.Conv2d`` (zero padding, any stride, dilation, groups): ``∂f_a/∂W = Σ_p δ_{a,p} u_p^T`` over
  output positions ``p``, with ``u_p`` the input patch (``F.unfold``, the conv-as-matmul identity), one product
  per example and group; ``∂f_a/∂b = Σ_p δ_{a,p}``. The forward pass computes the convolution itself from the
  same patches (:class:`_ConvsFromPatches`), so they are formed once;
* ``nn.BatchNorm1d/2d/3d`` in eval mode with running statistics (``y = γ x̂ + β``, ``x̂`` from the running mean and
  variance), ``nn.LayerNorm`` and ``nn.GroupNorm`` (``x̂`` per example): ``∂f_a/∂γ = Σ δ_a ⊙ x̂`` and
  ``∂f_a/∂β = Σ δ_a`` over the dimensions a parameter is shared across;
* a Linear on inputs with extra dimensions ``(n, ..., d)``: the per-example gradient summed over them.

Any parameter-free computation between these layers (activations, pooling, flattening, dropout in eval mode,
residual additions, concatenations) is handled by autograd, since the signals ``δ`` come from one forward pass and one
batched backward pass per output over each mini-batch of a chunk (examples do not interact in eval mode; the recorded
tensors are copied only when an in-place operation after a layer changes them). Conv and norm
gradients are materialised per example and chunk, side by side in one ``(chunk, c, P_dense)`` tensor, so that a
block of the kernel takes one matrix product for all of them; a chunk's are recomputed for each
block of the kernel they enter, so memory is bounded by the chunk size, not by ``n x P``. The default chunk holds a
third of the memory available when the kernel starts (:func:`feature_budget`): when all ``n`` examples fit, their
features are computed once. Each block of the kernel is written in place into the output (:func:`gram_sum_into`); of
a symmetric kernel only the row blocks from the diagonal on are computed (:func:`upper_row_block_into`: at one torch
thread numpy's ``syrk`` on the diagonal blocks, half their flops), then mirrored (:func:`mirror_upper`).

:func:`structured_operator` keeps every example's features (when they fit) for matrix-free products ``K v``.

Exact: the same numbers as the plain per-example Jacobian Gram (float64 agreement to rounding; tests).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, *_NORMS)
#: The least number of per-example feature numbers one chunk may hold (512 MB at float64); the default chunk uses a
#: third of the memory available when the kernel starts, if that is more (:func:`feature_budget`).
_CHUNK_NUMBERS = 2**26
#: Layer inputs and signals recorded per forward / backward mini-batch of :func:`_features` (8 MB at float64), and
#: the size of its first mini-batch, which measures them.
_PASS_NUMBERS = 2**20
_FIRST_PASS = 16
#: Row blocks of a symmetric kernel, and the fewest rows of one (:func:`symmetric_rows`).
_SYMMETRIC_BLOCKS = 8
_SYMMETRIC_ROWS = 256
#: Per-example conv weight gradients of at most this many numbers are computed into a contiguous scratch
#: (:func:`_conv_weight_grad`).
_SCRATCH_PRODUCT = 2**13


def _available_bytes(device: torch.device) -> int | None:
    """Memory available on ``device`` now: CUDA's free memory, or Linux's ``MemAvailable`` (free pages plus the
    reclaimable cache); ``None`` where it cannot be read."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):  # not Linux, or no CUDA query
        return None


def feature_budget(device: torch.device, itemsize: int) -> int:
    """Per-example feature numbers one chunk may hold by default: a third of the memory available on ``device``
    now, and at least :data:`_CHUNK_NUMBERS`. Larger chunks recompute the per-example gradients of fewer kernel
    blocks; when every example's features fit, they are computed once."""
    available = _available_bytes(device)
    return _CHUNK_NUMBERS if available is None else max(_CHUNK_NUMBERS, available // (3 * itemsize))


class UnsupportedLayerError(ValueError):
    """A layer with trainable parameters that the layer-wise NTK does not handle (the message names it)."""


def unsupported_layer(model: nn.Module) -> str | None:
    """``None`` if every module of ``model`` that owns trainable parameters is one the layer-wise NTK handles, else
    a sentence naming the first one that is not, and why."""
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        label = f"{name or 'the model'} ({type(module).__name__})"
        if not isinstance(module, SUPPORTED):
            return f"{label} has trainable parameters and is not one of {', '.join(t.__name__ for t in SUPPORTED)}"
        if isinstance(module, nn.Conv1d | nn.Conv2d) and module.padding_mode != "zeros":
            return f"{label} pads with {module.padding_mode!r}; only zero padding is handled"
        if isinstance(module, nn.Conv1d | nn.Conv2d) and isinstance(module.padding, str):
            return f"{label} has padding={module.padding!r}; give the padding as numbers"
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) and not module.track_running_stats:
            return f"{label} has no running statistics: in eval mode it normalises by the batch, so examples interact"
        extra = [n for n, _ in module.named_parameters(recurse=False) if n not in ("weight", "bias")]
        if extra:
            return f"{label} has parameters {extra} besides weight and bias"
    return None


def _parametrised_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that own trainable parameters, after checking that each is one this path handles
    (:class:`UnsupportedLayerError` naming the first that is not)."""
    problem = unsupported_layer(model)
    if problem is not None:
        raise UnsupportedLayerError(problem)
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


@dataclass
class _Factored:
    """A Linear layer on ``(n, d)`` inputs: ``h`` (n, d_in [+1 for a trainable bias]) and ``δ`` (n, c, d_out)."""

    h: torch.Tensor
    delta: torch.Tensor


@dataclass
class _Features:
    """The per-example gradients of a chunk of ``n`` examples: every materialised parameter tensor side by side in
    ``dense`` (n, c, P) (or ``None``), and the factored Linear layers."""

    dense: torch.Tensor | None
    factored: list[_Factored]

    def take(self, rows: slice) -> _Features:
        """The features of a slice of the examples."""
        dense = None if self.dense is None else self.dense[rows]
        return _Features(dense, [_Factored(f.h[rows], f.delta[rows]) for f in self.factored])

    @property
    def per_example(self) -> int:
        """Numbers held per example."""
        dense = 0 if self.dense is None else self.dense[0].numel()
        return dense + sum(f.h.shape[1] + f.delta[0].numel() for f in self.factored)

    @property
    def outputs(self) -> int:
        return self.dense.shape[1] if self.dense is not None else self.factored[0].delta.shape[1]


def _factored(module: nn.Module, h: torch.Tensor, outputs: int) -> bool:
    """Whether a layer's term is computed factored, ``(h h'^T) ⊙ (δ δ'^T)``: a Linear on ``(n, d)`` inputs whose
    materialised gradient (``c · d_in · d_out`` numbers per example) would be larger than its factors."""
    if not isinstance(module, nn.Linear) or h.ndim != 2:
        return False
    return outputs * module.in_features * module.out_features > module.in_features + outputs * module.out_features


def _norm_hat(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``x̂`` of a norm layer (the input normalised, before the affine map), as the layer's eval forward computes it."""
    if isinstance(module, nn.LayerNorm):
        return nn.functional.layer_norm(h, module.normalized_shape, eps=module.eps)
    if isinstance(module, nn.GroupNorm):
        return nn.functional.group_norm(h, module.num_groups, eps=module.eps)
    shape = (1, -1) + (1,) * (h.ndim - 2)
    mean, var = module.running_mean.to(h.dtype).view(shape), module.running_var.to(h.dtype).view(shape)
    return (h - mean) / torch.sqrt(var + module.eps)


def _patches(h: torch.Tensor, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> torch.Tensor:
    """The input patches of a 2-d convolution, ``(n, C_in · k_h · k_w, out_h, out_w)``, the same numbers in the same
    order as ``F.unfold`` (flattened over the positions): a strided view of the (zero-padded) input, copied once
    (2-3x faster than ``F.unfold``'s im2col loop on the CPU, measured)."""
    if any(padding):
        h = nn.functional.pad(h, (padding[1], padding[1], padding[0], padding[0]))
    h = h.contiguous()
    n, channels, height, width = h.shape
    out_h = (height - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    s_n, s_c, s_h, s_w = h.stride()
    windows = h.as_strided(
        (n, channels, kernel[0], kernel[1], out_h, out_w),
        (s_n, s_c, dilation[0] * s_h, dilation[1] * s_w, stride[0] * s_h, stride[1] * s_w),
    )
    return windows.reshape(n, channels * kernel[0] * kernel[1], out_h, out_w)


def _conv_geometry(module: nn.Module) -> tuple[tuple, tuple, tuple, tuple]:
    """Kernel size, stride, padding and dilation of a conv layer as a 2-d convolution (a Conv1d is one of height 1)."""
    if isinstance(module, nn.Conv1d):
        return (
            (1, *module.kernel_size),
            (1, *module.stride),
            (0, *module.padding),
            (1, *module.dilation),
        )
    return module.kernel_size, module.stride, module.padding, module.dilation


def _conv_patches(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The input patches ``(n, C_in · k, *out_spatial)`` of a conv layer's input ``h`` ``(n, C_in, *spatial)``, one
    per output position."""
    if isinstance(module, nn.Conv1d):
        return _patches(h.unsqueeze(2), *_conv_geometry(module)).squeeze(2)
    return _patches(h, *_conv_geometry(module))


class _ConvFromPatches(torch.autograd.Function):
    """A convolution computed as one product of its weight with its input patches, which the per-example weight
    gradients then reuse; the backward pass is torch's convolution backward for the input. The weight and bias are
    constants here (:func:`_signals` differentiates with respect to layer outputs only), so they get no gradient.

    Torch's float64 CPU convolution (``slow_conv2d``, no MKL-DNN path) unfolds each example again and multiplies
    it on its own; with the patches at hand, one batched product over the mini-batch is faster (measured in
    ``benchmarks/README.md``)."""

    @staticmethod
    def forward(ctx, h, weight, bias, patches, module):  # type: ignore[override]
        n, groups, out_channels = h.shape[0], module.groups, weight.shape[0]
        # the output is not a view of the product (autograd forbids in-place changes of a view made in here)
        out = torch.empty(n, out_channels, *patches.shape[2:], dtype=h.dtype, device=h.device)
        if groups == 1 and patches[0, 0].numel() == 1:
            # one output position (a deep layer on a small image): one product for the mini-batch, not a
            # matrix-vector product per example (several times slower on the ResNet's last stage, measured)
            torch.mm(patches.view(n, -1), weight.reshape(out_channels, -1).T, out=out.view(n, out_channels))
        else:
            flat = weight.reshape(groups, out_channels // groups, -1)  # (g, C_out/g, C_in/g·k)
            product = out.view(n, groups, out_channels // groups, -1)  # (n, g, C_out/g, L)
            torch.matmul(flat, patches.reshape(n, groups, flat.shape[2], -1), out=product)
        if bias is not None:
            out += bias.view(-1, *(1,) * (out.ndim - 2))
        ctx.save_for_backward(h, weight)
        ctx.module = module
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        h, weight = ctx.saved_tensors
        module = ctx.module
        # torch's own input gradient: faster than the transposed product and a col2im of ours (measured)
        (grad_h, _, _) = torch.ops.aten.convolution_backward(
            grad_out,
            h,
            weight,
            None,
            list(module.stride),
            list(module.padding),
            list(module.dilation),
            False,
            [0] * len(module.stride),
            module.groups,
            [True, False, False],
        )
        return grad_h, None, None, None, None


class _ConvsFromPatches(TorchFunctionMode):
    """Within :func:`_signals`' forward pass: each recorded conv layer's convolution computed by
    :class:`_ConvFromPatches`, its patches kept in ``patches`` by layer index.

    A layer's forward pre-hook announces it (:meth:`expect`); the next convolution is taken over only if it is the
    one ``nn.Conv1d`` / ``nn.Conv2d`` makes, of the layer's own input with the layer's own settings. Any other (a
    subclass that transforms its input first, a convolution outside the recorded layers) runs as it is, and the
    layer's patches are then taken from its recorded input."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: dict[int, torch.Tensor] = {}
        self._pending: tuple[int, nn.Module, torch.Tensor] | None = None

    def expect(self, index: int, module: nn.Module, h: torch.Tensor) -> None:
        """Layer ``index`` is about to convolve its input ``h``."""
        self._pending = (index, module, h)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is nn.functional.conv2d or func is nn.functional.conv1d:
            pending, self._pending = self._pending, None
            if pending is not None and not kwargs and len(args) == 7:
                index, module, h = pending
                settings = (module.stride, module.padding, module.dilation, module.groups)
                constants = not any(t is not None and t.requires_grad for t in args[1:3])
                if args[0] is h and args[1].shape == module.weight.shape and tuple(args[3:]) == settings and constants:
                    self.patches[index] = _conv_patches(module, h.detach())
                    return _ConvFromPatches.apply(h, args[1], args[2], self.patches[index], module)
        return func(*args, **kwargs)


def _conv_weight_grad(module: nn.Module, patches: torch.Tensor, delta: torch.Tensor, out: torch.Tensor) -> None:
    """Per-example, per-output ``∂f_a/∂W`` of a conv layer, ``(n, c, *W.shape)`` flattened, written into ``out``
    ``(n, c, |W|)`` (a slice of the features tensor): one batched product per output and group, straight into place.

    ``patches``: the layer's input patches ``(n, C_in · k, *out_spatial)`` (:func:`_conv_patches`); ``delta``: ``(n,
    c, C_out, *out_spatial)``."""
    n, c, out_channels = delta.shape[:3]
    groups = module.groups
    patches = patches.reshape(n, groups, patches.shape[1] // groups, -1)  # (n, g, C_in/g·k, L)
    signal = delta.reshape(n, c, groups, out_channels // groups, -1)  # (n, c, g, C_out/g, L)
    place = out.view(n, c, groups, out_channels // groups, patches.shape[2])  # (n, c, g, C_out/g, C_in/g·k)
    # torch's CPU bmm hands a contiguous result to MKL's batched product but loops over the examples for any other,
    # which for small per-example products costs more than the products (2x at two threads, measured): those go
    # through a contiguous scratch and are copied into their slice; large ones, whose copy would cost more, do not
    small = place[0, 0, 0].numel() <= _SCRATCH_PRODUCT
    scratch = (
        None
        if place[:, 0, 0].is_contiguous() or not small
        else torch.empty_like(place[:, 0, 0], memory_format=torch.contiguous_format)
    )
    for a in range(c):
        for g in range(groups):
            product = signal[:, a, g], patches[:, g].transpose(1, 2)
            if scratch is None:
                torch.bmm(*product, out=place[:, a, g])
            else:
                place[:, a, g] = torch.bmm(*product, out=scratch)


def _dense_grads(
    module: nn.Module, h: torch.Tensor, delta: torch.Tensor, out: torch.Tensor, patches: torch.Tensor | None
) -> None:
    """The per-example gradients of ``module``'s trainable parameters (weight, then bias), written side by side
    into ``out`` ``(n, c, Σ |θ|)``; ``h``: the layer's input, ``delta``: ``(n, c, *output shape)``; ``patches``: a
    conv layer's input patches if the forward pass kept them (:class:`_ConvsFromPatches`)."""
    n, c = delta.shape[:2]
    weight = module.weight is not None and module.weight.requires_grad
    bias = module.bias is not None and module.bias.requires_grad
    size = module.weight.numel() if weight else 0
    if isinstance(module, nn.Linear):
        flat_h, flat_d = h.reshape(n, -1, h.shape[-1]), delta.reshape(n, c, -1, delta.shape[-1])
        if weight:
            out[:, :, :size] = torch.einsum("natd,nte->nade", flat_d, flat_h).reshape(n, c, -1)
        if bias:
            out[:, :, size:] = flat_d.sum(dim=2)
        return
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if weight:
            patches = _conv_patches(module, h) if patches is None else patches
            _conv_weight_grad(module, patches, delta, out[:, :, :size])
        if bias:
            out[:, :, size:] = delta.flatten(3).sum(dim=3)
        return
    # norm layers: γ and β are shared over every dimension but the ones they index
    if isinstance(module, nn.LayerNorm):
        shared = tuple(range(2, delta.ndim - len(module.normalized_shape)))  # leading dims of each example
    else:
        shared = tuple(range(3, delta.ndim))  # spatial dims (channel is dim 2 of delta)
    if weight:
        term = delta * _norm_hat(module, h).unsqueeze(1)
        out[:, :, :size] = (term.sum(dim=shared) if shared else term).reshape(n, c, -1)
    if bias:
        out[:, :, size:] = (delta.sum(dim=shared) if shared else delta).reshape(n, c, -1)


def _signals(
    model: nn.Module, params: dict, buffers: dict, layers: list[nn.Module], x: torch.Tensor, copy: bool
) -> _Passed | None:
    """One forward pass over ``x`` recording each layer's input (and a conv layer's input patches, computed once
    for its forward, :class:`_ConvsFromPatches`), one backward pass per output for the signals ``δ``.

    ``copy``: record copies of each layer's input and output, so that in-place operations after the layer
    (``ReLU(inplace=True)``, ``out += identity``) change neither the recorded input nor the tensor whose gradient is
    the layer's signal. Without it, ``None`` if such an operation did change one (their version counters tell), and
    the caller passes again with ``copy=True``."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    versions: list[tuple[torch.Tensor, int]] = []
    convolutions = _ConvsFromPatches()

    def announce(index: int) -> Callable:
        def expect(module: nn.Module, args: tuple) -> None:
            convolutions.expect(index, module, args[0])

        return expect

    def hook(index: int) -> Callable:
        def record(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if copy:
                inputs[index], outputs[index] = args[0].detach().clone(), output
                return output.clone()
            inputs[index], outputs[index] = args[0].detach(), output
            versions.extend([(args[0], args[0]._version), (output, output._version)])
            return output

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    handles += [
        layer.register_forward_pre_hook(announce(i))
        for i, layer in enumerate(layers)
        if isinstance(layer, nn.Conv1d | nn.Conv2d)
    ]
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so that every layer's output is on the graph
            with convolutions:
                f = functional_call(model, (params, buffers), (x,)).reshape(x.shape[0], -1)
            if any(tensor._version != version for tensor, version in versions):
                return None  # changed in place after its layer
            missing = [type(layers[i]).__name__ for i in range(len(layers)) if i not in outputs]
            if missing:
                raise UnsupportedLayerError(
                    f"layers {missing} were not called in forward; the NTK path cannot see them"
                )
            order = list(outputs)
            c = f.shape[1]
            signals: list[list[torch.Tensor]] = [[] for _ in order]
            for a in range(c):
                grads = torch.autograd.grad(
                    f[:, a].sum(), [outputs[i] for i in order], retain_graph=a < c - 1, allow_unused=True
                )
                for slot, (i, g) in enumerate(zip(order, grads, strict=True)):
                    signals[slot].append(torch.zeros_like(outputs[i]) if g is None else g)
    finally:
        for handle in handles:
            handle.remove()
    # one output: a view, no copy
    deltas = [parts[0].unsqueeze(1) if len(parts) == 1 else torch.stack(parts, dim=1) for parts in signals]
    return _Passed(order, inputs, deltas, convolutions.patches)


@dataclass
class _Passed:
    """What one forward / backward pass over a mini-batch recorded: the indices of the layers in the order they
    were called, their inputs, their signals ``δ`` ``(n, c, *output shape)`` in that order, and the input patches
    of the conv layers whose convolution :class:`_ConvsFromPatches` computed."""

    order: list[int]
    inputs: dict[int, torch.Tensor]
    deltas: list[torch.Tensor]
    patches: dict[int, torch.Tensor]


def _features(
    model: nn.Module,
    params: dict,
    buffers: dict,
    layers: list[nn.Module],
    x: torch.Tensor,
    storage: torch.Tensor | None = None,
) -> _Features:
    """Every layer's per-example gradients of the examples ``x``: materialised ones written straight into their
    places side by side in one ``(n, c, P)`` tensor, factored ones as their factors.

    ``storage``: a flat tensor of at least ``n · c · P`` numbers to hold the materialised ones (a view of it), so
    that chunk after chunk reuses the same memory. A fresh allocation of gigabytes per chunk is new memory to
    fault in whenever the allocator cannot hand back the previous chunk's (which varied from run to run: up to a
    quarter of the ResNet's time, ``benchmarks/README.md``).

    The forward and backward passes (:func:`_signals`) go over mini-batches of about :data:`_PASS_NUMBERS`
    recorded numbers, the first of :data:`_FIRST_PASS` examples measuring the size: their temporaries (activations,
    signals, patches) are freed and reused batch after batch instead of being fresh memory for all ``n`` at once,
    whose first touch costs more than the arithmetic on the CPU (page faults)."""
    n = x.shape[0]
    dense: torch.Tensor | None = None
    factored: list[_Factored] = []
    rows = slice(0, min(n, _FIRST_PASS))
    copy = False  # until an in-place operation shows that the recorded tensors must be copies
    while rows.start < n:
        passed = None if copy else _signals(model, params, buffers, layers, x[rows], copy=False)
        if passed is None:
            copy = True
            passed = _signals(model, params, buffers, layers, x[rows], copy=True)
            assert passed is not None
        order, inputs, deltas = passed.order, passed.inputs, passed.deltas
        if rows.start == 0:  # the shapes are known now: allocate every example's features
            c = deltas[0].shape[1]
            is_factored = [_factored(layers[i], inputs[i], c) for i in order]
            sizes = [sum(p.numel() for p in layers[i].parameters(recurse=False) if p.requires_grad) for i in order]
            width = sum(size for size, flag in zip(sizes, is_factored, strict=True) if not flag)
            if width and storage is not None and storage.numel() >= n * c * width:
                dense = storage[: n * c * width].view(n, c, width)
            elif width:
                dense = torch.empty(n, c, width, dtype=x.dtype, device=x.device)
            for i, delta, flag in zip(order, deltas, is_factored, strict=True):
                if flag:  # h = (layer input if the weight is trainable, 1 if the bias is)
                    columns = layers[i].in_features if layers[i].weight.requires_grad else 0
                    bias = layers[i].bias is not None and layers[i].bias.requires_grad
                    h = torch.empty(n, columns + int(bias), dtype=x.dtype, device=x.device)
                    h[:, columns:] = 1  # the bias column, once for every example
                    factored.append(_Factored(h, torch.empty(n, *delta.shape[1:], dtype=x.dtype, device=x.device)))
            recorded = sum(inputs[i][0].numel() + delta[0].numel() for i, delta in zip(order, deltas, strict=True))
            batch = max(rows.stop, _PASS_NUMBERS // max(1, recorded))
        offset, slot = 0, 0
        for i, delta, flag, size in zip(order, deltas, is_factored, sizes, strict=True):
            layer = layers[i]
            if flag:  # the factors h (its bias column is set) and δ of a Linear layer
                target = factored[slot]
                slot += 1
                if layer.weight.requires_grad:
                    target.h[rows, : layer.in_features] = inputs[i]
                target.delta[rows] = delta
                continue
            assert dense is not None
            _dense_grads(layer, inputs[i], delta, dense[rows, :, offset : offset + size], passed.patches.get(i))
            offset += size
        del order, inputs, deltas, passed
        rows = slice(rows.stop, min(n, rows.stop + batch))
    return _Features(dense, factored)


#: A term of a kernel sum as seen from one side: ``(L, R)`` with ``L`` ``(n, k)`` and ``R`` ``(n, k')`` or ``None``
#: (a factor of ones); the term between two sets of examples is ``(L L'^T) ⊙ (R R'^T)``.
GramTerm = tuple[torch.Tensor, torch.Tensor | None]


def gram_sum_into(
    out: torch.Tensor,
    rows: Sequence[GramTerm],
    cols: Sequence[GramTerm] | None,
    scales: Sequence[float] | None = None,
    plus_one: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Write ``Σ_t s_t (L_t L'_t^T + o_t) ⊙ (R_t R'_t^T)`` into ``out`` ``(nr, nc)`` in place and return it.

    ``rows[t] = (L_t, R_t)`` for the rows' examples, ``cols[t]`` for the columns', ``R_t = None`` for a factor of
    ones; ``cols=None``: the rows' examples with themselves (a square block on the diagonal of a symmetric kernel),
    written exactly symmetric. ``scales``: one per term (default 1); ``plus_one``: per term, whether ``o_t = 1``
    (the bias of a layer whose inputs ``L`` carry no column of ones; default none), which costs nothing on a first
    term with an ``R`` and one pass over the block on any other. ``out`` may be a strided view of a larger kernel:
    the first term's products go straight into it, the others' into two scratch blocks reused term after term, so
    a block costs its matrix products and one pass over it per term (two for a later term without ``R`` on numpy's
    path, which has no in-place accumulating product).

    The products are torch's, except for a diagonal block (``cols=None``) on the CPU at one torch thread in
    float32 / float64: numpy's (OpenBLAS, held to one thread), whose ``L L^T`` is a ``syrk``, half the flops (torch
    has none). Off the diagonal, torch's GEMM (MKL) matched or beat OpenBLAS's on the CPUs measured within about
    10 %, and adds into the block in place (``benchmarks/README.md``). At more threads the two libraries' thread
    pools beside each other measured no faster than torch's alone, so torch's are used there throughout."""
    if not rows:
        raise ValueError("gram_sum_into needs at least one term")
    if cols is not None and len(cols) != len(rows):
        raise ValueError(f"gram_sum_into needs as many column terms as row terms, got {len(cols)} and {len(rows)}")
    symmetric = cols is None
    if symmetric and out.shape[0] != out.shape[1]:
        raise ValueError(f"a block of examples with themselves is square, got out of shape {tuple(out.shape)}")
    blas = symmetric and _numpy_path(out)
    with _blas_threads().limit(limits=1, user_api="blas") if blas else contextlib.nullcontext():
        _gram_sum(out, rows, rows if cols is None else cols, scales, plus_one, _numpy_syrk if blas else _torch_product)
    if symmetric and not blas:  # numpy's syrk writes an exactly symmetric block, torch's two sides round apart
        symmetrize_(out)
    return out


def _numpy_path(out: torch.Tensor) -> bool:
    """Whether :func:`gram_sum_into` takes numpy's ``syrk`` for a diagonal block ``out``: CPU, float32 / float64,
    one torch thread."""
    return out.device.type == "cpu" and out.dtype in (torch.float32, torch.float64) and torch.get_num_threads() == 1


#: ``product(L, L', out)`` writes ``L L'^T`` into ``out``; ``L' is L``: a set of examples with itself.
_Product = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def _torch_product(left: torch.Tensor, left2: torch.Tensor, out: torch.Tensor) -> None:
    torch.mm(left, left2.T, out=out)


def _numpy_syrk(left: torch.Tensor, left2: torch.Tensor, out: torch.Tensor) -> None:
    """``L L^T`` by numpy's ``matmul`` (OpenBLAS), which for an array times its own transpose calls ``syrk`` and
    mirrors its triangle; for a diagonal block only (``left2 is left``)."""
    if left2 is not left:
        raise ValueError("_numpy_syrk is for a set of examples with itself (left2 is left)")
    a = left.detach().contiguous().numpy()
    np.matmul(a, a.T, out=out.numpy())


def _gram_sum(
    out: torch.Tensor,
    rows: Sequence[GramTerm],
    cols: Sequence[GramTerm],
    scales: Sequence[float] | None,
    plus_one: Sequence[bool] | None,
    product: _Product,
) -> None:
    """:func:`gram_sum_into` with the given matrix product."""
    inner: torch.Tensor | None = None
    signal: torch.Tensor | None = None
    for index, ((left, right), (left2, right2)) in enumerate(zip(rows, cols, strict=True)):
        scale = 1.0 if scales is None else scales[index]
        one = plus_one is not None and plus_one[index]
        if right is None or right2 is None:
            if index == 0:
                product(left, left2, out)
                if one:
                    out.add_(1)
                if scale != 1:
                    out.mul_(scale)
            else:
                if product is _torch_product:  # torch's product adds into the block in place, with no scratch
                    out.addmm_(left, left2.T, alpha=scale)
                else:
                    inner = torch.empty_like(out, memory_format=torch.contiguous_format) if inner is None else inner
                    product(left, left2, inner)
                    out.add_(inner, alpha=scale)
                if one:
                    out.add_(scale)
            continue
        inner = torch.empty_like(out, memory_format=torch.contiguous_format) if inner is None else inner
        signal = torch.empty_like(out, memory_format=torch.contiguous_format) if signal is None else signal
        product(left, left2, inner)
        product(right, right2, signal)
        if scale != 1:
            signal.mul_(scale)
        if index == 0:
            if one:  # (inner + 1) ⊙ signal in the same single pass as the product alone
                torch.addcmul(signal, inner, signal, out=out)
            else:
                torch.mul(inner, signal, out=out)
        else:
            if one:
                inner.add_(1)
            out.addcmul_(inner, signal)  # fused: one pass over the block instead of two


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The BLAS libraries loaded in this process (numpy's OpenBLAS among them), to hold them to one thread."""
    return ThreadpoolController()


def upper_row_block_into(
    out: torch.Tensor,
    rows: Sequence[GramTerm],
    upper: Sequence[GramTerm],
    scales: Sequence[float] | None = None,
    plus_one: Sequence[bool] | None = None,
) -> torch.Tensor:
    """The row block of a symmetric kernel from its diagonal block on: ``out`` ``(r, c)`` between the ``r``
    examples of ``rows`` and the ``c`` examples of ``upper``, the first ``r`` of which are the rows' own; the
    diagonal block ``out[:, :r]`` exactly symmetric. Returns ``out``.

    Where :func:`gram_sum_into` uses numpy's ``syrk`` for a diagonal block (one torch thread), the diagonal block
    is that call and the rest another (torch's); otherwise the whole row block is one call (fewer, larger
    products), its diagonal block then symmetrized."""
    size = out.shape[0]
    if out.shape[1] < size:
        raise ValueError(
            f"a row block from the diagonal on needs as many columns as rows or more, got {tuple(out.shape)}"
        )
    if not _numpy_path(out):
        gram_sum_into(out, rows, upper, scales, plus_one)
        symmetrize_(out[:, :size])
        return out
    gram_sum_into(out[:, :size], rows, None, scales, plus_one)
    if out.shape[1] > size:
        right = [(left[size:], None if signal is None else signal[size:]) for left, signal in upper]
        gram_sum_into(out[:, size:], rows, right, scales, plus_one)
    return out


def _terms(features: _Features) -> list[GramTerm]:
    """The kernel terms of a chunk's features (one output, or the trace over outputs: the outputs flattened in)."""
    dense = [] if features.dense is None else [(features.dense.flatten(1), None)]
    return dense + [(f.h, f.delta.flatten(1)) for f in features.factored]


def _block(rows: _Features, cols: _Features) -> torch.Tensor:
    """``(nr, nc, c, c)`` block of the full multi-output kernel between two chunks: Σ over parameter tensors."""
    block = None if rows.dense is None else torch.einsum("iap,jbp->ijab", rows.dense, cols.dense)
    for row, col in zip(rows.factored, cols.factored, strict=True):
        term = torch.einsum("iad,jbd->ijab", row.delta, col.delta).mul_((row.h @ col.h.T)[:, :, None, None])
        block = term if block is None else block.add_(term)
    assert block is not None  # a model with trainable parameters has at least one term
    return block


def _block_into(out: torch.Tensor, rows: _Features, cols: _Features, diagonal: bool = False) -> None:
    """Write the kernel block between two chunks into ``out``: ``(nr, nc)`` (one output or the trace) in place,
    ``(nr, nc, c, c)`` by assignment. ``diagonal``: a row block of a symmetric kernel from its diagonal block on
    (``cols`` start with the rows' own examples), whose diagonal block is made exactly symmetric
    (:func:`upper_row_block_into`)."""
    if out.ndim == 2:
        if diagonal:
            upper_row_block_into(out, _terms(rows), _terms(cols))
        else:
            gram_sum_into(out, _terms(rows), _terms(cols))
        return
    out.copy_(_block(rows, cols))
    if diagonal:
        symmetrize_(out[:, : out.shape[0]])


def _mirror(block: torch.Tensor) -> torch.Tensor:
    """The block of the kernel with rows and columns swapped: ``(nr, nc) -> (nc, nr)``, ``(nr, nc, c, c) -> (nc, nr,
    c, c)`` with the outputs swapped too."""
    return block.transpose(0, 1) if block.ndim == 2 else block.permute(1, 0, 3, 2)


def symmetric_rows(n: int, limit: int | None = None) -> int:
    """Rows per block of a symmetric ``n x n`` kernel of which only the blocks from the diagonal on are computed:
    about an eighth of ``n`` (56 % of the products with torch's, 50 % with numpy's ``syrk`` on the diagonal
    blocks, :func:`gram_sum_into`), but at least :data:`_SYMMETRIC_ROWS` (thinner blocks make slower products),
    and at most ``limit``."""
    size = max(_SYMMETRIC_ROWS, -(-n // _SYMMETRIC_BLOCKS))
    return size if limit is None else max(1, min(size, limit))


def symmetrize_(block: torch.Tensor) -> torch.Tensor:
    """Make a square block of a kernel, ``(b, b)`` or ``(b, b, c, c)``, exactly symmetric in place: the mean of
    its two sides, whose rounding differs when both were computed. Returns ``block``."""
    return block.copy_((block + _mirror(block)) / 2)


def mirror_upper(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Complete a symmetric kernel ``(n, n)`` or ``(n, n, c, c)`` whose row blocks of ``size`` rows are computed
    from the diagonal block on, each diagonal block already exactly symmetric: the blocks right of each diagonal
    block are mirrored below it. Returns ``kernel``."""
    n = kernel.shape[0]
    for rows in _chunks(n, size):
        kernel[rows.stop :, rows] = _mirror(kernel[rows, rows.stop :])
    return kernel


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def structured_ntk(
    model: nn.Module,
    x: torch.Tensor,
    x2: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    chunk_size: int | None,
    multi_output: str,
) -> torch.Tensor:
    """The NTK of ``model`` (eval mode) between ``x`` and ``x2`` (default ``x``) with the layer-wise formulas of
    the module docstring; ``params`` / ``buffers``: the model's state in the compute dtype (trainable tensors as
    they are, the model's ``requires_grad`` flags decide which count). ``chunk_size``: examples per chunk (default:
    as many as :func:`feature_budget` allows)."""
    layers = _parametrised_layers(model)
    symmetric = x2 is None
    x2 = x if x2 is None else x2
    probe = _features(model, params, buffers, layers, x2[:1])
    per_example, c = probe.per_example, probe.outputs
    full = c > 1 and multi_output == "full"
    n, n2 = x.shape[0], x2.shape[0]
    # By default the features held at once (every example's, or a row chunk's and a column chunk's) take at most
    # feature_budget numbers
    budget = feature_budget(x.device, x.element_size()) // max(1, per_example)
    whole = chunk_size is None and (n2 if symmetric else n + n2) <= budget
    chunk = chunk_size or max(1, budget // 2)
    shape = (n, n2, c, c) if full else (n, n2)
    kernel = torch.empty(shape, dtype=x.dtype, device=x.device)
    if whole or (chunk >= n2 and (symmetric or chunk >= n)):
        # Every example's features fit in one chunk: compute them once, then the kernel in row blocks, written in
        # place; in the symmetric case only the blocks from the diagonal on, then mirrored.
        cols = _features(model, params, buffers, layers, x2)
        rows_all = cols if symmetric else _features(model, params, buffers, layers, x)
        if not symmetric:
            _block_into(kernel, rows_all, cols)
            return kernel
        size = symmetric_rows(n)
        for rows_slice in _chunks(n, size):
            upper = slice(rows_slice.start, n)
            _block_into(kernel[rows_slice, upper], cols.take(rows_slice), cols.take(upper), diagonal=True)
        return mirror_upper(kernel, size)
    # the materialised features of a column chunk and of a row chunk, in two buffers reused chunk after chunk
    width = 0 if probe.dense is None else probe.dense.shape[1] * probe.dense.shape[2]
    column_storage, row_storage = (
        torch.empty(min(chunk, n_chunk) * width, dtype=x.dtype, device=x.device) if width else None
        for n_chunk in (n2, n)
    )
    for cols_slice in _chunks(n2, chunk):
        cols = _features(model, params, buffers, layers, x2[cols_slice], column_storage)
        for rows_slice in _chunks(n, chunk):
            if symmetric and rows_slice.start > cols_slice.start:
                break  # the lower blocks are mirrored from the upper ones
            same = symmetric and rows_slice == cols_slice
            rows = cols if same else _features(model, params, buffers, layers, x[rows_slice], row_storage)
            _block_into(kernel[rows_slice, cols_slice], rows, cols, diagonal=same)
    return mirror_upper(kernel, chunk) if symmetric else kernel


def structured_diagonal(
    model: nn.Module,
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    chunk_size: int | None,
) -> torch.Tensor:
    """``(n,)`` diagonal of the NTK (trace over outputs), ``Σ_l ‖∂f(x_i)/∂θ_l‖²``, from the same per-layer
    features as :func:`structured_ntk`, chunk by chunk, without any ``n x n`` block."""
    layers = _parametrised_layers(model)
    per_example = _features(model, params, buffers, layers, x[:1]).per_example
    # each example's features are computed once whatever the chunk, so a small one only bounds memory
    chunk = chunk_size or max(1, min(x.shape[0], _CHUNK_NUMBERS // max(1, per_example)))
    diagonal = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for rows in _chunks(x.shape[0], chunk):
        features = _features(model, params, buffers, layers, x[rows])
        if features.dense is not None:
            diagonal[rows] += torch.linalg.vector_norm(features.dense.flatten(1), dim=1).square()  # no squared copy
        for factored in features.factored:
            diagonal[rows] += factored.h.square().sum(1) * factored.delta.square().flatten(1).sum(1)
    return diagonal


def structured_operator(
    model: nn.Module,
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    batch_size: int,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``v ↦ K v`` for a one-output model from every example's per-layer features, computed once (forward and
    backward passes over mini-batches of ``batch_size``) and kept; ``None`` if they would take more than
    :func:`feature_budget` (the caller then uses Jacobian-vector products).

    Per product: ``F (F^T v)`` for the materialised layers (``F``: ``(n, P_dense)``) and, for each factored Linear
    layer, ``M = H^T diag(v) Δ`` (``d_in x d_out``, the weight-shaped ``Φ_l^T v``), then ``(K_l v)_i = h_i^T M δ_i``:
    about ``4 n (P_dense + Σ d_in d_out)`` flops and no pass through the network."""
    layers = _parametrised_layers(model)
    probe = _features(model, params, buffers, layers, x[:1])
    if probe.outputs != 1:
        raise ValueError(f"the matrix-free NTK needs a model with one output, this one has {probe.outputs}")
    if x.shape[0] * probe.per_example > feature_budget(x.device, x.element_size()):
        return None
    chunks = [(rows, _features(model, params, buffers, layers, x[rows])) for rows in _chunks(x.shape[0], batch_size)]

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        pulled: torch.Tensor | int = 0  # Φ_dense^T v
        weights: list[torch.Tensor | int] = [0] * len(probe.factored)  # per factored layer, H^T diag(v) Δ
        for rows, features in chunks:
            v = vector[rows]
            if features.dense is not None:
                pulled = pulled + features.dense[:, 0].T @ v
            for index, layer in enumerate(features.factored):
                weights[index] = weights[index] + layer.h.T @ (v[:, None] * layer.delta[:, 0])
        out = torch.empty_like(vector)
        for rows, features in chunks:
            result = features.dense[:, 0] @ pulled if features.dense is not None else torch.zeros_like(vector[rows])
            for layer, weight in zip(features.factored, weights, strict=True):
                result += ((layer.h @ weight) * layer.delta[:, 0]).sum(dim=1)
            out[rows] = result
        return out

    return matvec


__all__ = [
    "SUPPORTED",
    "GramTerm",
    "UnsupportedLayerError",
    "feature_budget",
    "gram_sum_into",
    "mirror_upper",
    "structured_diagonal",
    "structured_ntk",
    "structured_operator",
    "symmetric_rows",
    "symmetrize_",
    "unsupported_layer",
    "upper_row_block_into",
]

"""The empirical neural tangent kernel (NTK) and tangent features of any PyTorch model (Eq. 2-5, Def. 1).

For a model ``f(x; θ)`` with ``P`` trainable parameters the neural tangent random feature (NTRF) matrix is the
Jacobian ``Φ = ∂f(X)/∂θ`` (Eq. 3), ``(n, P)`` for one output, and the empirical NTK is its Gram matrix
``K = Φ Φ^T`` (``(n, n)``). Three ways to get it:

* ``method="layerwise"``: exact closed form for stacks of ``nn.Linear`` and element-wise activations (any activation
  in :data:`ELEMENTWISE`; ``nn.Dropout`` acts as identity, as in eval mode). With ``h_{l-1}`` the input of linear
  layer ``l`` and ``δ_l = ∂f/∂(pre-activation of layer l)`` the back-propagated signal,
  ``K = Σ_l (H_{l-1} H'_{l-1}^T + 1[bias]) ⊙ (Δ_l Δ'_l^T)``. It never forms the ``(n, P)`` Jacobian: memory is
  ``O(n Σ_l d_l)`` for the features plus the output, cost ``2 n n₂ Σ_l (d_{l-1} + d_l)`` flops (half of it when
  ``x2`` is ``None``, since only the upper block triangle is computed).
* ``method="jacobian"``: ``torch.func`` (``vmap`` over per-example ``jacrev``) for any model: the reference.
  It stores the Jacobian of ``x2`` (``n₂ · c · P`` numbers) and processes ``x`` in chunks of ``chunk_size`` rows.
* ``method="layerwise"`` on any other stack of ``nn.Linear``, ``nn.Conv1d/2d``, ``nn.BatchNorm*`` (eval mode, running
  statistics), ``nn.LayerNorm`` and ``nn.GroupNorm`` with parameter-free modules between them (residual additions
  included, e.g. our ResNets): per-layer structured derivatives (:mod:`gradstarve.ntk_structured`), exact, memory
  bounded by the chunk size.
* ``method="auto"``: layerwise when the model qualifies, else jacobian (logging the layer that forced it).

The NTK of a stochastic or batch-dependent network is not defined, so every method evaluates the model in eval mode
(dropout off, batch norm with running statistics), restoring its mode afterwards.

:func:`top_features` gives the ``k`` strongest features (Def. 1) without a full eigendecomposition; its
``"matrix_free"`` method runs Lanczos (``scipy.sparse.linalg.eigsh``) on ``K v = Φ (Φ^T v)`` (:func:`kernel_operator`),
so it never stores an ``(n, n)`` or ``(n, P)`` matrix: from every example's per-layer features, kept when they fit in
a third of the available memory (a few matrix products per ``K v``, no pass through the network), else through
``torch.func.vjp`` / ``jvp`` over mini-batches.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from gradstarve.devices import on_device, reuse_host_memory
from gradstarve.ntk_structured import (
    GramTerm,
    UnsupportedLayerError,
    gram_sum_into,
    mirror_upper,
    structured_diagonal,
    structured_ntk,
    structured_operator,
    symmetric_rows,
    symmetrize_,
    unsupported_layer,
    upper_row_block_into,
)

_log = logging.getLogger(__name__)

#: Activation modules the layer-wise NTK handles: each acts element-wise, so its Jacobian is diagonal.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.Softplus,
    nn.ELU,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Identity,
    nn.Hardtanh,
    nn.Softsign,
    nn.CELU,
    nn.SELU,
    nn.Mish,
)

Method = Literal["auto", "layerwise", "jacobian"]
MultiOutput = Literal["full", "trace"]

#: Default number of example pairs (rows x columns) held in one block of work; about 256 MB at float64.
_BLOCK_ELEMENTS = 2**25


# --------------------------------------------------------------------------------------------------------------
# Checks and helpers
# --------------------------------------------------------------------------------------------------------------
def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True): its NTK is zero")
    return params


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every entry of ``tensor`` is finite. One pass over it in the usual case: a NaN or an infinity makes
    the sum non-finite, so a finite sum settles it; a non-finite one (which may be an overflow) is checked entry by
    entry (``isfinite`` takes five passes over large inputs)."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_inputs(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1, got {tuple(x.shape)}")
    reference = next(iter(model.parameters()), None)
    if reference is None:
        raise ValueError("model has no parameters")
    if reference.device != x.device:
        raise ValueError(f"model is on {reference.device} but {name} is on {x.device}; move one of them")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not _finite(x):
        bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.ndim))).sum()) if x.ndim > 1 else -1
        rows = f"{bad} of its {x.shape[0]} examples hold" if bad >= 0 else "it holds"
        raise ValueError(f"{name} is not finite: {rows} NaN or infinity; the kernel would be NaN. Clean the inputs")
    bad_parameters = [n for n, p in model.named_parameters() if not _finite(p)]
    if bad_parameters:
        raise ValueError(f"the model's parameters are not finite ({', '.join(bad_parameters[:3])}): a diverged model")


def _resolve_dtype(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, name: str = "x") -> torch.dtype:
    model_dtype = next(iter(model.parameters())).dtype
    if dtype is None:
        if x.dtype != model_dtype:
            raise ValueError(
                f"model parameters are {model_dtype} but {name} is {x.dtype}; cast one of them or pass dtype= to "
                "compute in a common dtype"
            )
        return model_dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in eval mode (the NTK of a stochastic network is not defined)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _output_dim(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> int:
    params, buffers = _cast_state(model, dtype)
    with torch.no_grad():
        out = functional_call(model, (params, buffers), (x[:1].to(dtype),))
    if out.ndim == 1:
        return 1
    if out.ndim != 2:
        raise ValueError(f"model output must have shape (n,) or (n, c), got {tuple(out.shape)}")
    return int(out.shape[1])


def _cast_state(model: nn.Module, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {
        name: p.detach().to(dtype) if p.is_floating_point() else p.detach() for name, p in model.named_parameters()
    }
    buffers = {name: b.to(dtype) if b.is_floating_point() else b for name, b in model.named_buffers()}
    return params, buffers


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _default_chunk(n_rows: int, n_cols: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        return chunk_size
    return max(1, min(n_rows, _BLOCK_ELEMENTS // max(1, n_cols)))


# --------------------------------------------------------------------------------------------------------------
# Layer-wise NTK for stacks of Linear + element-wise activations
# --------------------------------------------------------------------------------------------------------------
def linear_stack(model: nn.Module) -> list[nn.Module] | None:
    """The modules of ``model`` as a flat list if the layer-wise NTK applies to it, else ``None``.

    Qualifies: a model with an ``ntk_layers()`` method returning the modules it applies to its flattened input
    (:class:`~gradstarve.models.MLP` has one), or an ``nn.Sequential`` (optionally starting with ``nn.Flatten``),
    whose modules are ``nn.Linear``, :data:`ELEMENTWISE` activations and ``nn.Dropout``, ending in ``nn.Linear``
    (an MLP with batch norm does not qualify). Parameters must be those of the linear layers only.
    """
    layers = getattr(model, "ntk_layers", None)
    if callable(layers):
        modules = list(layers())
    elif isinstance(model, nn.Sequential):
        modules = list(model)
        if modules and isinstance(modules[0], nn.Flatten):
            modules = modules[1:]
    else:
        return None
    if not modules or not isinstance(modules[-1], nn.Linear):
        return None
    for module in modules:
        if isinstance(module, nn.Linear | nn.Dropout):
            continue
        if type(module) not in ELEMENTWISE or any(True for _ in module.parameters()):
            return None
    return modules


@dataclass
class _LayerFeatures:
    """Per linear layer with trainable parameters: its input ``h`` (n, d_in), with a trailing column of ones for a
    trainable bias (just that column if only the bias is trainable), and its back-propagated signal ``delta``
    (n, c, d_out), or ``None`` for the output layer, whose signal is the identity (``∂f_a/∂z_b = δ_ab``).
    ``ones``: the bias's column of ones is not stored in ``h`` (the first linear layer, whose input is the data: no
    copy of it), so ``h h'^T`` gets 1 added wherever it is used."""

    h: torch.Tensor
    delta: torch.Tensor | None
    ones: bool = False

    def rows(self, index: slice) -> _LayerFeatures:
        return _LayerFeatures(self.h[index], None if self.delta is None else self.delta[index], self.ones)


def _layer_features(modules: list[nn.Module], x: torch.Tensor, dtype: torch.dtype) -> list[_LayerFeatures]:
    """Forward pass recording the inputs of each linear layer, then the backward signals, batched over examples."""
    h = x.reshape(x.shape[0], -1).to(dtype)
    inputs: list[torch.Tensor] = []
    derivatives: list[torch.Tensor | None] = []  # per module: φ'(z) for activations, None otherwise
    with torch.no_grad():
        for module in modules:
            if isinstance(module, nn.Linear):
                inputs.append(h)
                bias = None if module.bias is None else module.bias.to(dtype)
                h = nn.functional.linear(h, module.weight.to(dtype), bias)
                derivatives.append(None)
            elif isinstance(module, nn.Dropout):
                derivatives.append(None)
            else:
                z = h.detach().requires_grad_(True)
                with torch.enable_grad():
                    # an in-place activation (ReLU(inplace=True)) needs a non-leaf input: a clone, only for those
                    out = module(z.clone() if getattr(module, "inplace", False) else z)
                    # element-wise: the gradient of the sum is the diagonal of the Jacobian, φ'(z)
                    (derivative,) = torch.autograd.grad(out.sum(), z)
                derivatives.append(derivative)
                h = out.detach()
    n, c = h.shape
    delta: torch.Tensor | None = None  # identity at the output
    features: list[_LayerFeatures] = []
    linear_index = len(inputs)
    for module, derivative in zip(reversed(modules), reversed(derivatives), strict=True):
        if isinstance(module, nn.Linear):
            linear_index -= 1
            weight_trainable = module.weight.requires_grad
            bias_trainable = module.bias is not None and module.bias.requires_grad
            parts = [inputs[linear_index]] if weight_trainable else []
            if weight_trainable and bias_trainable and linear_index == 0:
                # first in the list: gram_sum_into adds the 1 for free on its first term
                features.insert(0, _LayerFeatures(parts[0], delta, ones=True))
            else:
                if bias_trainable:
                    parts.append(torch.ones(n, 1, dtype=dtype, device=h.device))
                if parts:
                    features.append(_LayerFeatures(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0], delta))
            if linear_index > 0:
                weight = module.weight.to(dtype)
                delta = weight.expand(n, c, weight.shape[1]) if delta is None else delta @ weight
        elif derivative is not None:
            delta = delta * derivative[:, None, :]
    return features


def _full_block(rows: list[_LayerFeatures], cols: list[_LayerFeatures], n_outputs: int) -> torch.Tensor:
    """``(nr, nc, c, c)`` block of the full multi-output NTK from the layer features: Σ_l (h·h') ⊙ (δ_a·δ'_b)."""
    block = None
    for row, col in zip(rows, cols, strict=True):
        inner = row.h @ col.h.T  # the column of ones adds the bias term (+1)
        if row.ones:
            inner += 1
        if row.delta is None:  # output layer: δ_a·δ'_b = δ_ab
            term = torch.zeros(*inner.shape, n_outputs, n_outputs, dtype=inner.dtype, device=inner.device)
            term.diagonal(dim1=2, dim2=3).copy_(inner[:, :, None].expand(-1, -1, n_outputs))
        else:
            term = torch.einsum("iad,jbd->ijab", row.delta, col.delta).mul_(inner[:, :, None, None])
        block = term if block is None else block.add_(term)
    assert block is not None
    return block


def _block_into(
    out: torch.Tensor,
    rows: list[_LayerFeatures],
    cols: list[_LayerFeatures],
    n_outputs: int,
    diagonal: bool = False,
) -> None:
    """Write the NTK block between two sets of examples into ``out``: ``(nr, nc)`` (one output, or the trace over
    outputs) in place, Σ_l (h·h') ⊙ (Σ_a δ_a·δ'_a), or ``(nr, nc, c, c)`` by assignment. ``diagonal``: a row block
    of a symmetric kernel from its diagonal block on (``cols`` start with the rows' own examples), whose diagonal
    block is made exactly symmetric (:func:`~gradstarve.ntk_structured.upper_row_block_into`)."""
    if out.ndim == 4:
        out.copy_(_full_block(rows, cols, n_outputs))
        if diagonal:
            symmetrize_(out[:, : out.shape[0]])
        return

    def terms(features: list[_LayerFeatures]) -> list[GramTerm]:
        return [(f.h, None if f.delta is None else f.delta.flatten(1)) for f in features]

    # the output layer's signal is the identity: its trace Σ_a δ_aa is c
    scales = [float(n_outputs) if f.delta is None else 1.0 for f in rows]
    ones = [f.ones for f in rows]
    if diagonal:
        upper_row_block_into(out, terms(rows), terms(cols), scales, ones)
    else:
        gram_sum_into(out, terms(rows), terms(cols), scales, ones)


def _layerwise_ntk(
    model: nn.Module,
    x: torch.Tensor,
    x2: torch.Tensor | None,
    dtype: torch.dtype,
    chunk_size: int | None,
    multi_output: MultiOutput,
) -> torch.Tensor:
    modules = linear_stack(model)
    n_outputs = modules[-1].out_features
    symmetric = x2 is None
    x2 = x if x2 is None else x2
    cols = _layer_features(modules, x2, dtype)
    n, n2 = x.shape[0], x2.shape[0]
    shape = (n, n2) if n_outputs == 1 or multi_output == "trace" else (n, n2, n_outputs, n_outputs)
    kernel = torch.empty(shape, dtype=dtype, device=x.device)
    chunk = _default_chunk(n, n2, chunk_size)
    if symmetric:  # the row blocks from the diagonal on, written in place, then mirrored
        size = chunk if chunk_size is not None else symmetric_rows(n, chunk)
        for rows in _chunks(n, size):
            upper = slice(rows.start, n2)
            row_features, upper_features = [f.rows(rows) for f in cols], [f.rows(upper) for f in cols]
            _block_into(kernel[rows, upper], row_features, upper_features, n_outputs, diagonal=True)
        return mirror_upper(kernel, size)
    for rows in _chunks(n, chunk):
        _block_into(kernel[rows], _layer_features(modules, x[rows], dtype), cols, n_outputs)
    return kernel


# --------------------------------------------------------------------------------------------------------------
# Jacobian-based NTK (any model)
# --------------------------------------------------------------------------------------------------------------
def _model_function(model: nn.Module, dtype: torch.dtype) -> tuple[Callable, dict[str, torch.Tensor]]:
    """``f(params, x_batch) -> (batch, c)`` over the trainable parameters, the frozen ones and buffers bound."""
    params, buffers = _cast_state(model, dtype)
    trainable_names = set(_trainable(model))
    trainable = {k: v for k, v in params.items() if k in trainable_names}
    frozen = {k: v for k, v in params.items() if k not in trainable_names}

    def f(p: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**frozen, **p}, buffers), (batch,))
        return out.reshape(batch.shape[0], -1)

    return f, trainable


def _jacobian(f: Callable, params: dict[str, torch.Tensor], x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(n, c, P)`` per-example Jacobian via vmap over jacrev, ``chunk_size`` examples at a time."""

    def single(p: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
        return f(p, example.unsqueeze(0))[0]

    per_example = vmap(jacrev(single), in_dims=(None, 0))
    pieces = []
    for rows in _chunks(x.shape[0], chunk_size):
        jac = per_example(params, x[rows])
        pieces.append(torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()], dim=2))
    return torch.cat(pieces)


def _jacobian_ntk(
    model: nn.Module,
    x: torch.Tensor,
    x2: torch.Tensor | None,
    dtype: torch.dtype,
    chunk_size: int | None,
    multi_output: MultiOutput,
) -> torch.Tensor:
    f, params = _model_function(model, dtype)
    n_params = sum(p.numel() for p in params.values())
    jac_chunk = chunk_size or max(1, min(256, _BLOCK_ELEMENTS // max(1, n_params)))
    cols = _jacobian(f, params, (x if x2 is None else x2).to(dtype), jac_chunk)
    n2, c, _ = cols.shape
    pieces = []
    for rows in _chunks(x.shape[0], jac_chunk):
        row_jac = cols[rows] if x2 is None else _jacobian(f, params, x[rows].to(dtype), jac_chunk)
        if c == 1 or multi_output == "trace":
            pieces.append(row_jac.reshape(row_jac.shape[0], -1) @ cols.reshape(n2, -1).T)
        else:
            pieces.append(torch.einsum("iap,jbp->ijab", row_jac, cols))
    return torch.cat(pieces)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def empirical_ntk(
    model: nn.Module,
    x: torch.Tensor,
    *,
    x2: torch.Tensor | None = None,
    method: Method = "auto",
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    multi_output: MultiOutput = "full",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The empirical NTK ``K(x, x2) = Φ(x) Φ(x2)^T`` at the model's current parameters (Eq. 3-5).

    Args:
        model: maps ``(n, ...)`` inputs to ``(n,)`` or ``(n, c)`` outputs; only parameters with
            ``requires_grad=True`` count. Evaluated in eval mode (see module docstring).
        x: ``(n, ...)`` inputs; ``x2``: ``(n2, ...)`` inputs (default ``x``, giving the symmetric Gram).
        method: ``"layerwise"``, ``"jacobian"`` or ``"auto"``: layerwise for MLPs (:func:`linear_stack`) and for any
            network whose parametrised layers are Linear, Conv1d/2d, BatchNorm, LayerNorm or GroupNorm
            (:mod:`gradstarve.ntk_structured`); otherwise ``"auto"`` falls back to the Jacobian and logs (INFO, logger
            ``gradstarve.ntk``) the layer that forced it, and ``"layerwise"`` raises, naming it.
        dtype: compute in this dtype (e.g. ``torch.float64`` for reference values); default the model's.
        chunk_size: examples per block of rows (layerwise) or per Jacobian chunk (jacobian); bounds peak memory at
            about ``chunk_size * n2`` (layerwise) or ``(n2 + chunk_size) * c * P`` (jacobian) numbers beside the
            output. Default: blocks of about 2^25 numbers (MLPs); conv / norm networks: every example's per-layer
            features at once if they fit in a third of the memory available
            (:func:`gradstarve.ntk_structured.feature_budget`), else row and column chunks that fit in it together.
        multi_output: for ``c > 1`` outputs, ``"full"`` returns ``(n, n2, c, c)``, ``"trace"`` returns the sum over
            outputs ``Σ_a K_aa``, ``(n, n2)``.
        device: compute on this device (``"auto"``, ``"cpu"``, ``"cuda[:N]"``; see :func:`gradstarve.devices.on_device`:
            the model is copied there, never moved); default: where the model and ``x`` are.

    Returns:
        ``(n, n2)`` (one output or ``"trace"``) or ``(n, n2, c, c)`` tensor, on the compute device.
    """
    model, (x, x2) = on_device(model, (x, x2), device)
    _check_inputs(model, x)
    if x2 is not None:
        _check_inputs(model, x2, "x2")
        if x2.shape[1:] != x.shape[1:]:
            raise ValueError(f"x2 must have the feature shape of x, {tuple(x.shape[1:])}, got {tuple(x2.shape[1:])}")
    dtype = _resolve_dtype(model, x, dtype)
    if multi_output not in ("full", "trace"):
        raise ValueError(f"multi_output must be 'full' or 'trace', got {multi_output!r}")
    if method not in ("auto", "layerwise", "jacobian"):
        raise ValueError(f"method must be 'auto', 'layerwise' or 'jacobian', got {method!r}")
    _trainable(model)
    with eval_mode(model), torch.no_grad(), reuse_host_memory():  # torch.func transforms still differentiate inside
        if method in ("layerwise", "auto") and linear_stack(model) is not None:
            return _layerwise_ntk(model, x, x2, dtype, chunk_size, multi_output)
        problem = unsupported_layer(model)
        if method in ("layerwise", "auto") and problem is None:
            params, buffers = _cast_state(model, dtype)
            x2_cast = None if x2 is None else x2.to(dtype)
            return structured_ntk(model, x.to(dtype), x2_cast, params, buffers, chunk_size, multi_output)
        if method == "layerwise":
            raise UnsupportedLayerError(
                f"method='layerwise' cannot handle this model: {problem}; use method='jacobian'"
            )
        if method == "auto":
            _log.info("empirical_ntk: per-example Jacobian path, because %s", problem)
        return _jacobian_ntk(model, x, x2, dtype, chunk_size, multi_output)


def kernel_diagonal(
    model: nn.Module,
    x: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``(n,)`` diagonal of the NTK, ``K_ii = ‖∂f(x_i)/∂θ‖²`` (single output, or the trace over outputs), without
    the full Gram: ``Σ_l (‖h_{l-1}‖² + 1) ‖δ_l‖²`` for linear stacks, chunked per-example Jacobians otherwise.
    ``device`` as in :func:`empirical_ntk`."""
    model, (x,) = on_device(model, (x,), device)
    _check_inputs(model, x)
    dtype = _resolve_dtype(model, x, dtype)
    _trainable(model)
    with eval_mode(model), torch.no_grad(), reuse_host_memory():
        modules = linear_stack(model)
        diagonal = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
        if modules is not None:
            chunk = _default_chunk(x.shape[0], 1024, chunk_size)
            for rows in _chunks(x.shape[0], chunk):
                for layer in _layer_features(modules, x[rows], dtype):
                    outputs = modules[-1].out_features
                    signal = layer.delta.square().sum(dim=(1, 2)) if layer.delta is not None else outputs
                    diagonal[rows] += signal * (layer.h.square().sum(dim=1) + layer.ones)
            return diagonal
        if unsupported_layer(model) is None:  # conv / norm networks: the per-layer features, no Jacobian
            params, buffers = _cast_state(model, dtype)
            return structured_diagonal(model, x.to(dtype), params, buffers, chunk_size)
        f, params = _model_function(model, dtype)
        n_params = sum(p.numel() for p in params.values())
        chunk = chunk_size or max(1, min(256, _BLOCK_ELEMENTS // max(1, n_params)))
        for rows in _chunks(x.shape[0], chunk):
            diagonal[rows] = _jacobian(f, params, x[rows].to(dtype), chunk).square().sum(dim=(1, 2))
        return diagonal


def ntrf(model: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The neural tangent random feature matrix Φ (Eq. 3-5): ``(n, P)`` for one output, ``(n, c, P)`` for ``c``.

    Columns follow ``model.named_parameters()`` order (trainable ones only), each flattened. Memory ``n c P``: meant
    for small models, tests and teaching; use :func:`empirical_ntk` or :func:`top_features` for real ones.
    """
    _check_inputs(model, x)
    dtype = _resolve_dtype(model, x, dtype)
    with eval_mode(model), torch.no_grad(), reuse_host_memory():
        f, params = _model_function(model, dtype)
        jac = _jacobian(f, params, x.to(dtype), max(1, min(256, x.shape[0])))
    return jac[:, 0, :] if jac.shape[1] == 1 else jac


def signed_labels(y: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
    """Labels as a float64 ``{-1, +1}`` tensor of shape ``(n,)``; ``{0, 1}`` labels are mapped (with a warning)."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y.detach().cpu()).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"x has {n} examples but y has {y.shape[0]} labels")
    values = set(torch.unique(y).tolist())
    if values <= {-1, 1}:
        return y.to(torch.float64)
    if values <= {0, 1}:
        warnings.warn("labels in {0, 1} were mapped to {-1, +1} (y -> 2y - 1)", stacklevel=3)
        return (2 * y.to(torch.float64) - 1).to(torch.float64)
    raise ValueError(f"labels must be in {{-1, +1}} (or {{0, 1}}, which are mapped); got values {sorted(values)[:10]}")


@dataclass(frozen=True)
class Features:
    """The ``k`` strongest features of ``Y Φ₀ = U S V^T`` (Def. 1).

    Attributes:
        U: ``(n, k)`` float64, orthonormal columns, each with a non-negative sum (sign convention of
            :func:`gradstarve.theory.features`).
        strengths: ``(k,)`` singular values ``s``, descending; ``eigenvalues = s²`` are those of ``Y K Y`` and of K.
        matvecs: kernel-vector products used (matrix-free only, else 0).
    """

    U: np.ndarray
    strengths: np.ndarray
    matvecs: int = 0

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.strengths**2


def _finish(eigenvalues: np.ndarray, vectors: np.ndarray, matvecs: int = 0) -> Features:
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)  # a PSD Gram: negative values are rounding
    vectors = vectors[:, order]
    signs = np.where(vectors.sum(axis=0) < 0, -1.0, 1.0)
    return Features(vectors * signs, np.sqrt(eigenvalues), matvecs)


def features_from_gram(gram: torch.Tensor | np.ndarray, y: torch.Tensor, k: int | None = None) -> Features:
    """Top ``k`` features of ``Y K Y`` for a precomputed Gram ``K`` ``(n, n)`` (all ``n`` if ``k`` is None: ``eigh``;
    else ``eigsh``, Lanczos on the dense matrix)."""
    gram = np.asarray(gram.detach().cpu() if isinstance(gram, torch.Tensor) else gram, dtype=np.float64)
    n = gram.shape[0]
    if gram.shape != (n, n):
        raise ValueError(f"gram must be square (n, n), got {gram.shape}")
    signs = signed_labels(y, n).numpy()
    label_gram = signs[:, None] * gram * signs[None, :]
    if k is None or k >= n - 1:
        eigenvalues, vectors = np.linalg.eigh(label_gram)
        if k is not None:
            eigenvalues, vectors = eigenvalues[-k:], vectors[:, -k:]
        return _finish(eigenvalues, vectors)
    _check_k(k, n)
    eigenvalues, vectors = eigsh(label_gram, k=k, which="LA", tol=0)
    return _finish(eigenvalues, vectors)


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n = {n}], got {k!r}")


def kernel_operator(
    model: nn.Module,
    x: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    batch_size: int = 4096,
    method: Method = "auto",
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """A matrix-free NTK: returns ``(matvec, n)`` with ``matvec(v) = K v = Φ (Φ^T v)`` for ``v`` of shape ``(n,)``.
    Single-output models only.

    ``method="layerwise"``: every example's per-layer features are computed once and kept
    (:func:`gradstarve.ntk_structured.structured_operator`), then each product is a few matrix products with them and
    no pass through the network; for networks of Linear, Conv and norm layers whose features fit in a third of the
    available memory (an error otherwise). ``method="jacobian"``: ``Φ^T v`` is accumulated in parameter space with
    ``torch.func.vjp`` over mini-batches of ``batch_size``, then ``Φ u`` with ``torch.func.jvp``; memory: two
    parameter-sized vectors plus one mini-batch's activations; about three forward passes per product.
    ``method="auto"``: layerwise where it applies and fits, else jacobian (logged at INFO, with the reason).
    """
    _check_inputs(model, x)
    dtype = _resolve_dtype(model, x, dtype)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if method not in ("auto", "layerwise", "jacobian"):
        raise ValueError(f"method must be 'auto', 'layerwise' or 'jacobian', got {method!r}")
    n = x.shape[0]
    if _output_dim(model, x, dtype) != 1:
        raise ValueError("the matrix-free NTK needs a model with one output (a binary logit)")
    data = x.to(dtype)
    problem = unsupported_layer(model)
    if method == "layerwise" and problem is not None:
        raise UnsupportedLayerError(f"method='layerwise' cannot handle this model: {problem}; use method='jacobian'")
    if method != "jacobian" and problem is None:
        params, buffers = _cast_state(model, dtype)
        with eval_mode(model), torch.no_grad(), reuse_host_memory():
            product = structured_operator(model, data, params, buffers, batch_size)
        if product is not None:

            def layerwise_matvec(v: np.ndarray) -> np.ndarray:
                vector = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(n), dtype=dtype, device=x.device)
                return product(vector).cpu().numpy().astype(np.float64)

            return layerwise_matvec, n
        if method == "layerwise":
            raise ValueError(
                "method='layerwise': the per-layer features of all n examples would take more than a third of the "
                "available memory; use method='jacobian' (Jacobian-vector products) or fewer examples"
            )
        problem = "the per-layer features of all examples do not fit in a third of the available memory"
    if method == "auto":
        _log.info("kernel_operator: Jacobian-vector products, because %s", problem)
    f, params = _model_function(model, dtype)

    def matvec(v: np.ndarray) -> np.ndarray:
        vector = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(n), dtype=dtype, device=x.device)
        with eval_mode(model), torch.no_grad(), reuse_host_memory():
            cotangent = {name: torch.zeros_like(p) for name, p in params.items()}
            for rows in _chunks(n, batch_size):
                _, pullback = vjp(lambda p, b=data[rows]: f(p, b)[:, 0], params)
                (grads,) = pullback(vector[rows])
                for name in cotangent:
                    cotangent[name] += grads[name]
            out = torch.empty(n, dtype=dtype, device=x.device)
            for rows in _chunks(n, batch_size):
                _, tangent = jvp(lambda p, b=data[rows]: f(p, b)[:, 0], (params,), (cotangent,))
                out[rows] = tangent
        return out.detach().cpu().numpy().astype(np.float64)

    return matvec, n


def top_features(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | np.ndarray,
    k: int = 10,
    method: Literal["dense", "matrix_free"] = "dense",
    *,
    dtype: torch.dtype | None = None,
    batch_size: int = 4096,
    tol: float = 0.0,
    progress: Callable[[int], None] | None = None,
    device: str | torch.device | None = None,
    ntk_method: Method = "auto",
) -> Features:
    """The ``k`` strongest features of ``Y Φ₀ = U S V^T`` (Def. 1) at the model's current parameters.

    ``"dense"`` forms the Gram with :func:`empirical_ntk` (``O(n²)`` memory) and runs ``eigsh`` on ``Y K Y``;
    ``"matrix_free"`` runs Lanczos (``eigsh``) on ``v ↦ y ⊙ K (y ⊙ v)`` with :func:`kernel_operator`, in memory
    bounded by the mini-batch, which handles n = 50,000 on a CPU.

    Args:
        y: ``(n,)`` labels in {-1, +1} (or {0, 1}, mapped with a warning).
        k: number of features, ``1 <= k < n`` for matrix-free.
        tol: Lanczos relative tolerance on eigenvalues (0 = machine precision).
        progress: called with the number of kernel-vector products done so far (matrix-free), e.g. to update a bar.
        device: compute on this device, as in :func:`empirical_ntk`.
        ntk_method: how the kernel is computed: the ``method`` of :func:`empirical_ntk` (dense) or of
            :func:`kernel_operator` (matrix-free: ``"layerwise"`` keeps every example's per-layer features,
            ``"jacobian"`` uses Jacobian-vector products, ``"auto"`` the first where it fits).
    """
    model, (x,) = on_device(model, (x,), device)
    _check_inputs(model, x)
    n = x.shape[0]
    signs = signed_labels(y, n).numpy()
    _check_k(k, n)
    if method == "dense":
        gram = empirical_ntk(model, x, dtype=dtype, multi_output="trace", method=ntk_method)
        return features_from_gram(gram, torch.as_tensor(signs), k)
    if method != "matrix_free":
        raise ValueError(f"method must be 'dense' or 'matrix_free', got {method!r}")
    if k >= n:
        raise ValueError(f"matrix-free Lanczos needs k < n = {n}, got k = {k}; use method='dense'")
    matvec, _ = kernel_operator(model, x, dtype=dtype, batch_size=batch_size, method=ntk_method)
    count = 0

    def label_matvec(v: np.ndarray) -> np.ndarray:
        nonlocal count
        count += 1
        result = signs * matvec(signs * np.asarray(v).reshape(n))
        if progress is not None:
            progress(count)
        return result

    operator = LinearOperator((n, n), matvec=label_matvec, dtype=np.float64)
    with reuse_host_memory():  # one heap for all the products, not a fresh one per product
        eigenvalues, vectors = eigsh(operator, k=k, which="LA", tol=tol)
    return _finish(eigenvalues, vectors, count)

"""Where a computation runs: one checked ``torch.device`` from ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.

Layer 1 (maths), so that the NTK and the analysis take the same ``device=`` as the trainer and the CLI's
``--device``: ``"auto"`` is the one default everywhere (CUDA when visible, else the CPU).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["model_device", "on_device", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a checked
    ``torch.device``: an accelerator that is not there is a clear error, not a failure deep inside torch."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build"
        if torch.version.cuda is not None:
            build = f"built for CUDA {torch.version.cuda}, but no GPU is visible"
        raise ValueError(
            f"device {device!r} asked for a GPU, but this torch ({torch.__version__}) is {build}: use --device cpu "
            "or auto"
        )
    if target.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return target


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _same(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def on_device(
    model: nn.Module, tensors: tuple[torch.Tensor | None, ...], device: str | torch.device | None
) -> tuple[nn.Module, tuple[torch.Tensor | None, ...]]:
    """``model`` and ``tensors`` on ``device`` (``None``: unchanged, wherever they are).

    The caller's model is never moved: when it lives elsewhere, a deep copy is placed on ``device`` (its parameters
    are the same numbers, so the NTK is that of the caller's model), and the caller's optimizer and training loop
    keep theirs. ``None`` entries of ``tensors`` stay ``None``.
    """
    if device is None:
        return model, tensors
    target = resolve_device(device)
    if not _same(model_device(model), target):
        model = copy.deepcopy(model).to(target)
    return model, tuple(None if t is None else t.to(target) for t in tensors)

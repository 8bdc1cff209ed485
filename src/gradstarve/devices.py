"""Where a computation runs: one checked ``torch.device`` from ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``, and how
host memory is handed out while it runs.

Layer 1 (maths), so that the NTK and the analysis take the same ``device=`` as the trainer and the CLI's
``--device``: ``"auto"`` is the one default everywhere (CUDA when visible, else the CPU).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import platform
import threading
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["model_device", "on_device", "resolve_device", "reuse_host_memory"]

# glibc's mallopt parameters (malloc.h) and the values its dynamic mmap threshold reaches after large blocks are
# freed on a 64-bit system (DEFAULT_MMAP_THRESHOLD_MAX, twice that for trimming, DEFAULT_MMAP_MAX).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_SETTLED = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 64 * 2**20, _M_MMAP_MAX: 65536}
#: At most this much free heap memory stays with the process when the outermost :func:`reuse_host_memory` exits
#: (more is returned to the operating system), so that the next kernel of a small model reuses it unfaulted.
_KEEP_FREE_BYTES = 128 * 2**20
_reuse_lock = threading.Lock()
_reuse_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (whose ``mallopt`` and ``malloc_trim`` are used), else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


class _Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc 2.33 on)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
        )
    ]  # fmt: skip


def _free_heap_bytes(libc: ctypes.CDLL) -> int | None:
    """The free bytes in glibc's heaps, all arenas (``fordblks``; it still counts free blocks whose pages an earlier
    trim returned, so it errs towards trimming), or ``None`` where ``mallinfo2`` is missing (glibc < 2.33)."""
    try:
        mallinfo2 = libc.mallinfo2
    except AttributeError:
        return None
    mallinfo2.restype = _Mallinfo2
    return int(mallinfo2().fordblks)


@contextlib.contextmanager
def reuse_host_memory() -> Iterator[None]:
    """Inside, host memory that torch frees is kept by the allocator and handed out again, instead of being
    returned to the operating system and faulted in (and zeroed) afresh at the next large allocation.

    The per-layer NTK allocates and frees hundreds of MB per chunk of examples; with glibc's defaults every such
    block is a fresh ``mmap``, and the page faults cost more than the arithmetic (``benchmarks/README.md``). Inside
    this context glibc serves large blocks from its heap and never trims it; on exit the thresholds are set to the
    values glibc's own dynamic adjustment reaches after large frees, and the free memory is returned
    (``malloc_trim``) if it is more than :data:`_KEEP_FREE_BYTES` (128 MiB). Less is kept, as glibc itself keeps
    freed memory, so that the next kernel of a small model does not fault its features and output in afresh
    (measured in ``benchmarks/README.md``). Re-entrant; a no-op where the C library is not glibc.
    """
    global _reuse_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _reuse_lock:
        _reuse_depth += 1
        if _reuse_depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0:
                for parameter, value in _SETTLED.items():
                    libc.mallopt(parameter, value)
                free = _free_heap_bytes(libc)
                if free is None or free > _KEEP_FREE_BYTES:
                    libc.malloc_trim(0)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op CPU threads set to ``count`` inside, the previous number restored on exit (even on an error).

    For small problems, whose many tiny parallel regions gain little from more threads and, when another process
    shares the cores (a niced campaign beside it), stall at every region waiting for a descheduled thread; the
    measurement that chose one thread for the two-moons runs is in ``benchmarks/README.md``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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

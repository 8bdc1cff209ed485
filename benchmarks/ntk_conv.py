"""Layer-wise empirical NTK of conv / norm networks against nngeometry, side by side (issue 16).

    pip install --no-deps nngeometry==0.4        # benchmark-only; its torchvision requirement would not match torch
    python benchmarks/ntk_conv.py [--threads 1] [--reps 3] [--models mlp,cnn,cnn_bn] [--resnet-n 1000]
        [--nngeometry-batches 250,500,1000] [--matvec]

Float64, eval mode. Every measurement runs in its own child process, so that its peak resident memory
(``ru_maxrss``) is its own; for each model the children alternate (ours, then nngeometry at each of its mini-batch
sizes, ``reps`` times), each timing one kernel after an untimed warm-up, and the minimum time of each is reported,
nngeometry's at its best mini-batch size. Both
kernels are compared (max relative difference). The FLOP limit is the multiply-adds of our formulation's kernel
products (``2 n (n + 1) / 2 · P_eff`` for the symmetric kernel, ``P_eff`` the per-example numbers of the per-layer
features) at the float64 matrix-product rate measured in the same run; the forward and backward passes and the
per-example gradients are not counted, so the limit is optimistic.

Models: ``mlp`` 784-300-300-1 (n = 2,000), ``cnn`` Conv2d(2,16,3) -> Conv2d(16,32,3,s2) -> Linear(1152,64) ->
Linear(64,1) (n = 1,000), ``cnn_bn`` the same with BatchNorm (eval), ``resnet`` our ResNet-18 at half width on
32 px inputs (n = ``--resnet-n``; minutes to hours). ``--matvec`` times the matrix-free kernel-vector products
instead: the kept per-layer features (``method="layerwise"``) against Jacobian-vector products
(``method="jacobian"``). Results go to stdout as markdown tables; the measured numbers live in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXAMPLES = {"mlp": 2000, "cnn": 1000, "cnn_bn": 1000, "resnet": 1000}
NAMES = {
    "mlp": "MLP 784-300-300-1",
    "cnn": "CNN conv, conv s2, linear 1152-64, linear",
    "cnn_bn": "the CNN with BatchNorm (eval)",
    "resnet": "ResNet-18 at half width, 32 px",
}


def build(name: str, n: int) -> tuple[nn.Module, torch.Tensor]:
    """The model (float64, eval mode) and ``n`` random inputs; the same for every process (seeded)."""
    from gradstarve.models.resnet import build_resnet

    torch.manual_seed(0)  # the layers' default initialisation
    generator = torch.Generator().manual_seed(0)
    head = [nn.Linear(1152, 64), nn.ReLU(), nn.Linear(64, 1)]
    if name == "mlp":
        model: nn.Module = nn.Sequential(
            nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 1)
        )
        x = torch.randn(n, 784, generator=generator)
    elif name == "cnn":
        convs = [nn.Conv2d(2, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(), nn.Flatten()]
        model, x = nn.Sequential(*convs, *head), torch.randn(n, 2, 16, 16, generator=generator)
    elif name == "cnn_bn":
        convs = [nn.Conv2d(2, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2)]
        convs += [nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten()]
        model, x = nn.Sequential(*convs, *head), torch.randn(n, 2, 16, 16, generator=generator)
    else:
        model = build_resnet("cpu", out_features=1, generator=generator)
        x = torch.randn(n, 3, 32, 32, generator=generator)
    return model.double().eval(), x.double()


def per_example_numbers(model: nn.Module, x: torch.Tensor) -> int:
    """``P_eff``: the numbers per example of our per-layer features (materialised gradients and factors)."""
    from gradstarve.ntk import _cast_state
    from gradstarve.ntk_structured import _features

    params, buffers = _cast_state(model, torch.float64)
    layers = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    with torch.no_grad():
        return _features(model, params, buffers, layers, x[:1]).per_example


def matmul_rate(threads: int) -> float:
    """Float64 multiply-add rate of a 2048² matrix product, best of 5 (flops per second)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048, dtype=torch.float64), torch.randn(2048, 2048, dtype=torch.float64)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def nngeometry_gram(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    from nngeometry.backend.torch_hooks.torch_hooks import TorchHooksJacobianBackend

    loader = DataLoader(TensorDataset(x), batch_size=batch)
    gram = TorchHooksJacobianBackend(model=model).get_gram_matrix(loader)
    return gram.reshape(x.shape[0], x.shape[0])


def measure(name: str, n: int, library: str, batch: int, threads: int, save: str | None, queue) -> None:
    """Child process: one kernel by one library; puts (seconds, peak RSS in GiB) on ``queue``."""
    from gradstarve import ntk

    torch.set_num_threads(threads)
    model, x = build(name, n)
    # Warm up (code paths, the allocator's pages) before the clock starts: on all the inputs for the small models,
    # on 8 for the ResNet, whose kernel takes minutes
    warm = x[:8] if name == "resnet" else x
    compute = (
        (lambda inputs: ntk.empirical_ntk(model, inputs, method="layerwise"))
        if library == "ours"
        else (lambda inputs: nngeometry_gram(model, inputs, min(batch, inputs.shape[0])))
    )
    compute(warm)
    start = time.perf_counter()
    kernel = compute(x)
    seconds = time.perf_counter() - start
    if save:
        torch.save(kernel, save)
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20))


def in_child(*args) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=measure, args=(*args, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"measurement {args[:4]} died with exit code {child.exitcode} (out of memory?)")
    return queue.get()


def side_by_side(names: list[str], sizes: dict[str, int], reps: int, threads: int, batches: list[int]) -> None:
    rate = matmul_rate(threads)
    print(f"float64 matrix-product rate: {rate / 1e9:.1f} GFLOP/s on {threads} thread(s)\n")
    print(
        "| model | n | nngeometry (s, best batch) | ours (s) | speed-up | FLOP limit (s) | ours / limit "
        "| peak RSS ours / nngeometry (GiB) | max relative difference |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        n = sizes[name]
        with tempfile.TemporaryDirectory() as folder:
            ours_file, theirs_file = str(Path(folder) / "ours.pt"), str(Path(folder) / "theirs.pt")
            ours, theirs = [], {batch: [] for batch in batches if batch <= n or batch == batches[0]}
            for rep in range(reps):
                ours.append(in_child(name, n, "ours", 0, threads, ours_file if rep == 0 else None))
                for batch in theirs:
                    save = theirs_file if rep == 0 and batch == next(iter(theirs)) else None
                    theirs[batch].append(in_child(name, n, "nngeometry", batch, threads, save))
            kernel = torch.load(ours_file, weights_only=True)
            reference = torch.load(theirs_file, weights_only=True)
        difference = float((kernel - reference).abs().max() / kernel.abs().max())
        best_batch = min(theirs, key=lambda batch: min(t for t, _ in theirs[batch]))
        ours_time, theirs_time = min(t for t, _ in ours), min(t for t, _ in theirs[best_batch])
        model, x = build(name, 1)
        limit = n * (n + 1) * per_example_numbers(model, x) / rate
        print(
            f"| {NAMES[name]} | {n:,} | {theirs_time:.2f} (batch {best_batch}) | {ours_time:.2f} | "
            f"{theirs_time / ours_time:.2f}x | {limit:.2f} | {ours_time / limit:.2f}x | "
            f"{max(m for _, m in ours):.2f} / {max(m for _, m in theirs[best_batch]):.2f} | {difference:.1e} |",
            flush=True,
        )
        others = ", ".join(f"batch {b}: {min(t for t, _ in v):.2f} s" for b, v in theirs.items())
        print(f"|  | | nngeometry by batch: {others} | | | | | | |", flush=True)


def matvecs(names: list[str], sizes: dict[str, int], threads: int, products: int = 5) -> None:
    from gradstarve import ntk

    torch.set_num_threads(threads)
    print("| model | n | method | set-up (s) | per product (s) | max relative difference |")
    print("|---|---|---|---|---|---|")
    for name in names:
        model, x = build(name, sizes[name])
        v = torch.randn(x.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
        results = {}
        for method in ("layerwise", "jacobian"):
            start = time.perf_counter()
            try:
                matvec, _ = ntk.kernel_operator(model, x, method=method)
            except ValueError as error:  # the per-layer features do not fit
                print(f"| {NAMES[name]} | {sizes[name]:,} | {method} | {error} | | |", flush=True)
                continue
            setup = time.perf_counter() - start
            times = []
            for _ in range(products):
                start = time.perf_counter()
                results[method] = matvec(v)
                times.append(time.perf_counter() - start)
            first = next(iter(results.values()))
            difference = abs(results[method] - first).max() / abs(first).max()
            print(
                f"| {NAMES[name]} | {sizes[name]:,} | {method} | {setup:.2f} | {min(times):.3f} | {difference:.1e} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn,cnn_bn", help=f"comma-separated, of {', '.join(EXAMPLES)}")
    parser.add_argument("--resnet-n", type=int, default=EXAMPLES["resnet"], help="examples for the ResNet")
    parser.add_argument("--n", type=int, default=None, help="examples for every model (default: per model)")
    parser.add_argument("--nngeometry-batches", default="250,500,1000", help="nngeometry's mini-batch sizes to try")
    parser.add_argument("--matvec", action="store_true", help="time matrix-free kernel-vector products instead")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(EXAMPLES))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(EXAMPLES)}")
    sizes = {**EXAMPLES, "resnet": args.resnet_n}
    if args.n is not None:
        sizes = dict.fromkeys(sizes, args.n)
    if args.matvec:
        matvecs(names, sizes, args.threads)
    else:
        batches = [int(b) for b in args.nngeometry_batches.split(",")]
        side_by_side(names, sizes, args.reps, args.threads, batches)


if __name__ == "__main__":
    main()

"""Benchmark of the empirical NTK on an MNIST-size MLP (issue 4). Not a test: prints a table, writes JSON.

Side by side, in one run, float64, on the 784-300-300-1 ReLU MLP with n random inputs:

1. the layer-wise NTK (``gradstarve.ntk.empirical_ntk(method="layerwise")``);
2. the ``torch.func`` per-example-Jacobian Gram (``method="jacobian"``) at the same n if memory allows, else at
   smaller n and extrapolated with ``a n + b n²`` fitted on two sizes (the Jacobian is linear in n, its Gram
   quadratic), which is said in the output;
3. the FLOP-bound limit: the FLOPs of the minimal computation (for a symmetric Gram, the symmetric rank-k
   products ``H Hᵀ`` and ``Δ Δᵀ`` of every layer: ``n² Σ_l (d_{l-1} + 1 + d_l)``, the output layer's ``Δ`` being 1)
   divided by the measured peak float64 matmul rate on this machine;
4. the matrix-free top-10 features (Lanczos with ``K v = J (Jᵀ v)``) at n = 50,000 on the 392-300-300-1 Colored
   MNIST MLP (real Colored MNIST with ``--data-root``, else random inputs of the same shape).

Each measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.

Usage: ``python benchmarks/ntk.py [--n 5000] [--matrix-free-n 50000] [--data-root DIR] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path
from queue import Empty

import torch

WIDTHS = (784, 300, 300, 1)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _model(widths, seed: int = 0):
    from gradstarve.models import MLP

    return MLP(widths[0], widths[1:-1], widths[-1], generator=torch.Generator().manual_seed(seed)).double()


def _inputs(n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _time_ntk(method: str, n: int, repeats: int, queue) -> None:
    from gradstarve.ntk import empirical_ntk

    torch.set_num_threads(os.cpu_count() or 1)
    model, x = _model(WIDTHS), _inputs(n, WIDTHS[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel = empirical_ntk(model, x, method=method)
        times.append(time.perf_counter() - start)
    queue.put(
        {
            "seconds": min(times),
            "all_seconds": times,
            "peak_rss_gib": _peak_rss_gib(),
            "checksum": float(kernel.diagonal().sum()),
        }
    )


def _peak_matmul(queue) -> None:
    """Best float64 GFLOP/s over square and Gram-shaped products."""
    torch.set_num_threads(os.cpu_count() or 1)
    best = 0.0
    for m, k, n in ((4096, 4096, 4096), (5000, 785, 5000), (5000, 300, 5000), (2048, 2048, 2048)):
        a = torch.rand(m, k, dtype=torch.float64)
        b = torch.rand(k, n, dtype=torch.float64)
        a @ b  # warm up
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    queue.put({"gflops": best})


def _matrix_free(n: int, k: int, data_root: str | None, ntk_method: str, queue) -> None:
    from gradstarve.ntk import top_features

    torch.set_num_threads(os.cpu_count() or 1)
    widths = (392, 300, 300, 1)
    source = "random inputs"
    if data_root:
        from gradstarve.data.colored_mnist import colored_mnist

        train = colored_mnist(data_root=Path(data_root), seed=0)["train"]
        x, y = train.x[:n].reshape(-1, 392).double(), train.signed_labels()[:n]
        source = "Colored MNIST training environments"
    else:
        x = _inputs(n, 392)
        y = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(2)) < 0.5, -1.0, 1.0)
    model = _model(widths)
    start = time.perf_counter()
    found = top_features(model, x, y, k=k, method="matrix_free", batch_size=4096, tol=1e-6, ntk_method=ntk_method)
    queue.put(
        {
            "seconds": time.perf_counter() - start,
            "matvecs": found.matvecs,
            "strengths": found.strengths.tolist(),
            "peak_rss_gib": _peak_rss_gib(),
            "source": source,
        }
    )


def _run(target, *args):
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    while True:  # a child killed by the OOM killer never answers: notice it instead of waiting forever
        try:
            result = queue.get(timeout=1.0)
            break
        except Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"{target.__name__}{args} died with exit code {process.exitcode} (out of memory?)"
                ) from None
    process.join()
    return result


def _available_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 2**20
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--matrix-free-n", type=int, default=50_000)
    parser.add_argument("--matrix-free-k", type=int, default=10)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--skip-matrix-free", action="store_true")
    parser.add_argument("--only-matrix-free", action="store_true", help="skip the dense kernels")
    parser.add_argument(
        "--matrix-free-methods",
        default="layerwise,jacobian",
        help="K v from the kept per-layer features (layerwise) and/or Jacobian-vector products (jacobian)",
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    n = args.n
    n_params = sum(a * b + b for a, b in itertools.pairwise(WIDTHS))
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "n": n,
        "widths": WIDTHS,
        "parameters": n_params,
    }

    if not args.only_matrix_free:
        results["peak_matmul"] = _run(_peak_matmul)
        flops = n * n * sum(a + 1 + b for a, b in itertools.pairwise(WIDTHS[:-1])) + n * n * (WIDTHS[-2] + 1)
        results["flop_limit"] = {"gflop": flops / 1e9, "seconds": flops / (results["peak_matmul"]["gflops"] * 1e9)}
        print(
            f"peak float64 matmul: {results['peak_matmul']['gflops']:.1f} GFLOP/s; minimal computation "
            f"{flops / 1e9:.1f} GFLOP -> FLOP limit {results['flop_limit']['seconds']:.2f} s"
        )

        results["layerwise"] = _run(_time_ntk, "layerwise", n, 3)
        print(
            f"layerwise: {results['layerwise']['seconds']:.2f} s, "
            f"peak RSS {results['layerwise']['peak_rss_gib']:.2f} GiB"
        )

        jacobian_gib = n * n_params * 8 / 2**30
        # torch.func's vmapped backward holds every layer's per-example gradients and then their concatenation: about
        # twice the Jacobian at its peak (n = 5,000: 12.2 GiB of Jacobian, 23 GiB resident before the OOM killer came)
        if jacobian_gib * 2.2 < _available_gib() - 2:
            results["jacobian"] = _run(_time_ntk, "jacobian", n, 1) | {"extrapolated": False}
        else:
            small = [max(200, n // 5), max(400, 2 * n // 5)]
            timings = [_run(_time_ntk, "jacobian", size, 1) for size in small]
            (n1, n2), (t1, t2) = small, (timings[0]["seconds"], timings[1]["seconds"])
            b = (t2 / n2 - t1 / n1) / (n2 - n1)  # t = a n + b n²
            a = t1 / n1 - b * n1
            results["jacobian"] = {
                "seconds": a * n + b * n * n,
                "extrapolated": True,
                "measured": dict(zip(small, timings, strict=True)),
                "peak_rss_gib": jacobian_gib,
                "note": f"Jacobian alone needs {jacobian_gib:.1f} GiB at n = {n}",
            }
        print(
            f"jacobian: {results['jacobian']['seconds']:.1f} s"
            f"{' (extrapolated)' if results['jacobian']['extrapolated'] else ''}, "
            f"peak RSS {results['jacobian']['peak_rss_gib']:.2f} GiB"
        )
        results["speedup_vs_jacobian"] = results["jacobian"]["seconds"] / results["layerwise"]["seconds"]
        results["ratio_to_flop_limit"] = results["layerwise"]["seconds"] / results["flop_limit"]["seconds"]
        print(
            f"layerwise is {results['speedup_vs_jacobian']:.0f}x faster than the Jacobian Gram and "
            f"{results['ratio_to_flop_limit']:.2f}x the FLOP limit"
        )

    if not args.skip_matrix_free:
        for method in args.matrix_free_methods.split(","):
            mf = _run(_matrix_free, args.matrix_free_n, args.matrix_free_k, args.data_root, method)
            results[f"matrix_free_{method}"] = mf
            print(
                f"matrix-free top-{args.matrix_free_k} at n = {args.matrix_free_n} ({mf['source']}), K v {method}: "
                f"{mf['seconds']:.0f} s, {mf['matvecs']} products, peak RSS {mf['peak_rss_gib']:.2f} GiB"
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "ntk_matrix_free.json" if args.only_matrix_free else "ntk.json"
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()

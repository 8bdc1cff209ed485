"""`FeatureAnalysis` of our CelebA ResNet-18 (cpu preset: half width, one logit) on real 32 px images (issue 16).

    python benchmarks/feature_analysis_resnet.py --data-root ../shared/data [--n 5000] [--k 10]
        [--methods dense,matrix_free] [--dtype float32] [--threads 1]

Each method runs in its own child process, so that its peak resident memory (``ru_maxrss``) is its own. The network
is the cpu preset's ResNet-18 at initialisation (seed 0, eval mode: BatchNorm uses its running statistics), the
images the first ``n`` of CelebA's training split (Blond_Hair labels). ``dense`` builds the n x n layer-wise NTK
(:mod:`gradstarve.ntk_structured`, default chunk) and eigendecomposes it; ``matrix_free`` runs Lanczos on
``K v`` (:func:`gradstarve.ntk.kernel_operator`). Both give the top ``k`` strengths; the script prints time, peak
memory and the largest relative difference between the two methods' strengths. Measured numbers live in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

import torch


def analyse(data_root: str, n: int, k: int, method: str, dtype: str, threads: int, queue) -> None:
    from gradstarve.analysis import FeatureAnalysis
    from gradstarve.data.celeba import load_celeba
    from gradstarve.models.resnet import build_resnet

    torch.set_num_threads(threads)
    train = load_celeba(data_root, resolution=32, splits=("train",), progress=False)["train"]
    x, y = train.x[:n].float(), train.y[:n]
    model = build_resnet("cpu", out_features=1, generator=torch.Generator().manual_seed(0)).eval()
    start = time.perf_counter()
    analysis = FeatureAnalysis(k=k, method=method, dtype=getattr(torch, dtype)).fit(model, x, 2 * y - 1)
    seconds = time.perf_counter() - start
    queue.put(
        {
            "method": method,
            "n": n,
            "seconds": seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "strengths": [float(s) for s in analysis.strengths_[:k]],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="holds celeba/ (e.g. ../shared/data)")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--methods", default="dense,matrix_free")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = []
    for method in args.methods.split(","):
        queue = context.Queue()
        child = context.Process(
            target=analyse, args=(args.data_root, args.n, args.k, method, args.dtype, args.threads, queue)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            print(f"{method}: the measurement process died (exit code {child.exitcode}; out of memory?)")
            continue
        result = queue.get()
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(results) == 2:
        first, second = (torch.tensor(r["strengths"], dtype=torch.float64) for r in results)
        print(f"max relative difference of the strengths: {float(((first - second).abs() / first).max()):.1e}")


if __name__ == "__main__":
    main()

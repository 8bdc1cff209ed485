"""Benchmark (issue 7, not a test): one full-batch Colored MNIST training step, ours vs the IRM reference loop's
computation vs the FLOP limit. Prints a markdown table, writes JSON.

Side by side in one process, steps interleaved (every repetition times each variant once, so load from other
processes hits all of them alike), 392-300-300-1 ReLU MLP, Adam, 50,000 training examples in two environments
(real Colored MNIST with ``--data-root``, else random images with the same one-non-zero-channel layout):

1. **reference-style baseline**: the computation per step of the IRM reference Colored MNIST loop, in our own
   words: a separate forward pass for each of the three environments (both training environments *and* the 10,000
   test examples, whose loss, accuracy and penalty it computes every step), the IRMv1 penalty as the gradient of
   each environment's loss with respect to a dummy scale with ``create_graph=True`` (a double-backward graph, built
   whatever the penalty weight), the explicit L2 term, float32, plain MLP;
2. **ours**: one ``Algorithm.update`` of :class:`gradstarve.algorithms.IRM` (and ERM, SD) as the trainer runs it:
   one forward pass over both environments, the closed-form IRM penalty, and
   :class:`~gradstarve.models.channel_sparse_mlp.ChannelSparseMLP`: the first layer multiplies only each example's
   non-zero colour channel, the rows go through the network in cache-sized blocks, in-place ReLUs;
3. ablations: the plain dense ``MLP`` (one forward over all rows), the channel-sparse model without row blocks,
   and all three under bfloat16 autocast;
4. the **FLOP limit**: the multiply-adds of the matrix products of our step (forward, weight gradients, input
   gradients of every layer but the first) at the matmul rate measured in the same run (a 4096² float32 /
   bfloat16 product); element-wise work (ReLU, loss, Adam) is not counted, so the limit is optimistic.

With ``--allocators`` the two "ours" rows are also timed in child processes under allocator settings that keep
freed pages: glibc's own tunables (``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184``:
no mmap, never give the heap back) and jemalloc (``LD_PRELOAD=libjemalloc.so.2
MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``, if installed; jemalloc with its default decay faults as much as
glibc). A whole-batch step allocates 45-60 MB tensors, above glibc's largest mmap threshold (32 MB), so by default
each is freshly mapped and faults on every page's first touch (~77,000 minor faults per float32 step before the row
blocks); the row blocks' activations are a few MB, reused from the heap, so these settings matter little now.
Timing on a shared machine: other processes take CPU time at random, so every variant is timed ``--reps`` times
interleaved and the table reports the *minimum* (the least disturbed step; ratios use it) and the median.

Usage: ``python benchmarks/colored_mnist.py [--data-root DIR] [--reps 9] [--allocators] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gradstarve.algorithms import build_algorithm
from gradstarve.hparams import default_hparams
from gradstarve.models.channel_sparse_mlp import ChannelSparseMLP
from gradstarve.models.mlp import MLP

WIDTHS = (392, 300, 300, 1)
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_KEEP_PAGES = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
GLIBC_KEEP_PAGES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def load_data(data_root: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """Training inputs/labels/environments (50,000) and the 10,000 test examples."""
    if data_root is not None:
        from gradstarve.experiments.tasks import load_task

        task = load_task("colored-mnist", {"data_root": data_root, "val_fraction": 0.0}, seed=0)
        test = task.evaluation["test"]
        data = {"x": task.train.x, "y": task.train.y, "group": task.train.group, "test_x": test.x, "test_y": test.y}
        return data, "real Colored MNIST (seed 0)"
    generator = torch.Generator().manual_seed(0)

    def fake(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.rand(n, 14, 14, generator=generator) * (torch.rand(n, 14, 14, generator=generator) < 0.2)
        color = torch.randint(0, 2, (n,), generator=generator)
        x = torch.zeros(n, 2, 14, 14)
        x[torch.arange(n), color] = pixels
        return x, torch.randint(0, 2, (n,), generator=generator)

    x, y = fake(50_000)
    test_x, test_y = fake(10_000)
    group = torch.arange(50_000) % 2
    return {"x": x, "y": y, "group": group, "test_x": test_x, "test_y": test_y}, "random images, colour layout"


# --------------------------------------------------------------------------------------------------------------
# The reference-style baseline (our words for the IRM reference loop's per-step computation)
# --------------------------------------------------------------------------------------------------------------
def reference_style_model() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(a, b) for a, b in itertools.pairwise(WIDTHS)]
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(layers[0], nn.ReLU(True), layers[1], nn.ReLU(True), layers[2])


def reference_style_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, envs: list[tuple[torch.Tensor, torch.Tensor]], hp: dict
) -> None:
    nlls, penalties, accuracies = [], [], []
    for x, y in envs:  # train env 0, train env 1, test env: one forward each, every step
        logits = model(x.reshape(len(x), -1))
        target = y.float()[:, None]
        nlls.append(nn.functional.binary_cross_entropy_with_logits(logits, target))
        accuracies.append(((logits > 0).float() == target).float().mean())
        scale = torch.ones((), requires_grad=True)
        scaled_loss = nn.functional.binary_cross_entropy_with_logits(logits * scale, target)
        (grad,) = torch.autograd.grad(scaled_loss, [scale], create_graph=True)
        penalties.append(grad.square().sum())
    loss = torch.stack(nlls[:2]).mean()
    loss = loss + hp["l2_weight"] * sum(p.norm().square() for p in model.parameters())
    weight = hp["irm_lambda"]
    loss = (loss + weight * torch.stack(penalties[:2]).mean()) / weight
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# --------------------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------------------
def step_flops(n_forward: int, n_backward: int, first_layer_channels: int = 2, active_channels: int = 1) -> float:
    """Matrix-product FLOPs of one step: forward over ``n_forward`` examples, backward over ``n_backward``
    (weight gradients of every layer, input gradients of all but the first); the first layer multiplies
    ``active_channels`` of its ``first_layer_channels`` input blocks."""
    first = WIDTHS[0] * WIDTHS[1] * active_channels / first_layer_channels
    rest = sum(a * b for a, b in itertools.pairwise(WIDTHS[1:]))
    return 2.0 * (n_forward * (first + rest) + n_backward * (first + 2 * rest))


def matmul_rate(dtype: torch.dtype, size: int = 4096) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    a @ b
    return 2 * size**3 / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------------------
def our_step(algorithm_name: str, model_class: str, data: dict, precision: str) -> Callable[[], None]:
    hparams = default_hparams(algorithm_name, "colored-mnist")
    hparams["hidden"] = [300, 300]
    generator = torch.Generator().manual_seed(0)
    if model_class == "sparse":
        model = ChannelSparseMLP(2, 392, (300, 300), 1, init="xavier", generator=generator)
    elif model_class == "sparse, one block":
        model = ChannelSparseMLP(2, 392, (300, 300), 1, init="xavier", generator=generator, block_bytes=None)
    else:
        model = MLP(392, (300, 300), 1, init="xavier", generator=generator)
    algorithm = build_algorithm(algorithm_name, model, hparams, 2)
    if algorithm_name == "irm":
        algorithm.num_updates = int(hparams["irm_anneal_steps"])  # the full penalty weight, as the baseline
    batch = (data["x"], data["y"], data["group"])

    def step() -> None:
        if precision == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                algorithm.update(batch)
        else:
            algorithm.update(batch)

    return step


def variants(data: dict, include_baseline: bool) -> dict[str, Callable[[], None]]:
    out: dict[str, Callable[[], None]] = {}
    if include_baseline:
        model = reference_style_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=4.9e-4)
        envs = [(data["x"][data["group"] == e], data["y"][data["group"] == e]) for e in (0, 1)]
        envs.append((data["test_x"], data["test_y"]))
        hp = default_hparams("irm", "colored-mnist")
        out["baseline: IRM reference loop, float32"] = lambda: reference_style_step(model, optimizer, envs, hp)
    out["ours IRM, dense MLP, float32"] = our_step("irm", "dense", data, "float32")
    out["ours IRM, no row blocks, float32"] = our_step("irm", "sparse, one block", data, "float32")
    out["ours IRM, float32"] = our_step("irm", "sparse", data, "float32")
    out["ours ERM, float32"] = our_step("erm", "sparse", data, "float32")
    out["ours SD, float32"] = our_step("sd", "sparse", data, "float32")
    out["ours IRM, dense MLP, bfloat16"] = our_step("irm", "dense", data, "bfloat16")
    out["ours IRM, no row blocks, bfloat16"] = our_step("irm", "sparse, one block", data, "bfloat16")
    out["ours IRM, bfloat16"] = our_step("irm", "sparse", data, "bfloat16")
    return out


def measure(steps: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    for step in steps.values():  # warm up; the second call builds the sparse model's channel grouping
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    times["matmul float32 (GFLOP/s)"] = []
    times["matmul bfloat16 (GFLOP/s)"] = []
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
        times["matmul float32 (GFLOP/s)"].append(matmul_rate(torch.float32) / 1e9)
        times["matmul bfloat16 (GFLOP/s)"].append(matmul_rate(torch.bfloat16) / 1e9)
    return times


def child(args: argparse.Namespace) -> None:
    data, _ = load_data(args.data_root)
    steps = variants(data, include_baseline=False)
    steps = {k: v for k, v in steps.items() if k in ("ours IRM, float32", "ours IRM, bfloat16")}
    times = measure(steps, args.reps)
    print(json.dumps({name: (min(v), statistics.median(v)) for name, v in times.items() if "matmul" not in name}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--allocators", action="store_true", help="also time ours with pages kept (children)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    load_before = os.getloadavg()
    data, source = load_data(args.data_root)
    n_train, n_test = len(data["y"]), len(data["test_y"])
    times = measure(variants(data, include_baseline=True), args.reps)
    load_after = os.getloadavg()
    rate32 = max(times.pop("matmul float32 (GFLOP/s)")) * 1e9
    rate16 = max(times.pop("matmul bfloat16 (GFLOP/s)")) * 1e9
    baseline_name = "baseline: IRM reference loop, float32"
    baseline = min(times[baseline_name])
    flops = {
        baseline_name: step_flops(n_train + n_test, n_train, active_channels=2),
        "dense": step_flops(n_train, n_train, active_channels=2),
        "sparse": step_flops(n_train, n_train, active_channels=1),
    }
    rows = []
    for name, values in times.items():
        kind = baseline_name if name == baseline_name else ("dense" if "dense" in name else "sparse")
        rate = rate16 if "bfloat16" in name else rate32
        limit = flops[kind] / rate
        rows.append(
            {
                "variant": name,
                "median_s": statistics.median(values),
                "min_s": min(values),
                "gflop": flops[kind] / 1e9,
                "speedup_vs_baseline": baseline / min(values),
                "flop_limit_s": limit,
                "times_flop_limit": min(values) / limit,
            }
        )
    if args.allocators:
        settings = [
            ("glibc heap, pages kept", {"GLIBC_TUNABLES": GLIBC_KEEP_PAGES}),
            ("jemalloc, pages kept", {"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": JEMALLOC_KEEP_PAGES}),
        ]
        for label, changes in settings:
            if "LD_PRELOAD" in changes and not Path(JEMALLOC).exists():
                continue
            command = [sys.executable, __file__, "--child", "--reps", str(args.reps)]
            command += ["--data-root", args.data_root] if args.data_root else []
            env = {**os.environ, **changes}
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            for name, (low, median) in json.loads(output.strip().splitlines()[-1]).items():
                rate = rate16 if "bfloat16" in name else rate32
                limit = flops["sparse"] / rate
                rows.append(
                    {
                        "variant": f"{name} [{label}, own process]",
                        "median_s": median,
                        "min_s": low,
                        "gflop": flops["sparse"] / 1e9,
                        "speedup_vs_baseline": baseline / low,
                        "flop_limit_s": limit,
                        "times_flop_limit": low / limit,
                    }
                )
    print(f"data: {source}; {n_train:,} training + {n_test:,} test examples; torch {torch.__version__}, ")
    print(f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; load average ")
    print(f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; matmul {rate32 / 1e9:.0f} GFLOP/s float32, ")
    print(f"{rate16 / 1e9:.0f} GFLOP/s bfloat16 (4096², best of {args.reps}); {args.reps} interleaved repetitions.\n")
    print("| variant | s/step (min) | median | GFLOP | speed-up vs baseline (min) | FLOP limit (s) | min / limit |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['min_s']:.3f} | {row['median_s']:.3f} | {row['gflop']:.1f} | "
            f"{row['speedup_vs_baseline']:.2f}x | {row['flop_limit_s']:.3f} | {row['times_flop_limit']:.2f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "data": source,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": [load_before[0], load_after[0]],
        "matmul_gflops": {"float32": rate32 / 1e9, "bfloat16": rate16 / 1e9},
        "rows": rows,
        "raw_seconds": times,
    }
    (out / "colored_mnist.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

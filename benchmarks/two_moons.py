"""Benchmark (issue 6, not a test): 10 two-moons seeds trained as one batched computation vs 10 sequential runs.

Both train the paper's 2-500-1 ReLU network full-batch with SGD (lr 1e-2, momentum 0.9, weight decay 2e-4) on
the same data and initialisations for the same number of steps; the batched run is
``gradstarve.experiments.two_moons`` minus its evaluation (``BatchedMLP`` + one optimiser), the sequential run is
the same loop over one ``MLP`` at a time. Target: batched >= 3x faster.

Usage: ``python benchmarks/two_moons.py [--steps 2000] [--seeds 10] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from gradstarve.experiments.two_moons import FIG2_SETTINGS, initial_models, moons_data, per_seed_loss
from gradstarve.models.batched_mlp import BatchedMLP


def batched_seconds(steps: int, seeds: list[int]) -> float:
    setting = FIG2_SETTINGS[1]
    x, signs = moons_data(setting, seeds)
    model = BatchedMLP.from_models(initial_models(setting, seeds))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=2e-4)
    start = time.perf_counter()
    for _ in range(steps):
        loss = per_seed_loss(model(x)[..., 0], signs, 0.0).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def sequential_seconds(steps: int, seeds: list[int]) -> float:
    setting = FIG2_SETTINGS[1]
    x, signs = moons_data(setting, seeds)
    models = initial_models(setting, seeds)
    start = time.perf_counter()
    for i, model in enumerate(models):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=2e-4)
        for _ in range(steps):
            loss = nn.functional.softplus(-signs[i] * model(x[i])[:, 0]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    batched_seconds(50, seeds)  # warm up
    batched = min(batched_seconds(args.steps, seeds) for _ in range(2))
    sequential = min(sequential_seconds(args.steps, seeds) for _ in range(2))
    result = {
        "steps": args.steps,
        "seeds": args.seeds,
        "threads": torch.get_num_threads(),
        "batched_seconds": batched,
        "sequential_seconds": sequential,
        "speedup": sequential / batched,
        "batched_ms_per_step": 1000 * batched / args.steps,
    }
    print(
        f"{args.seeds} seeds x {args.steps} steps: batched {batched:.2f} s, sequential {sequential:.2f} s, "
        f"speed-up {sequential / batched:.1f}x"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "two_moons.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Time the Table 2 recipe's runs on real CelebA and extrapolate the whole table.

    python benchmarks/celeba_table2.py --data-root ../shared/data [--preset cpu] [--methods erm,sd,group_dro]
        [--seeds 3] [--steps 10] [--threads 2] [--device cpu]

For each method, builds the recipe's run (:class:`gradstarve.experiments.reproduce.celeba.CelebASetup`), times
``--steps`` training updates on real batches (median after two warm-ups: augmentation + forward + backward +
optimizer) and one evaluation of val + test, then prints seconds per step, per epoch (steps + one evaluation) and
per run, and the extrapolated wall time of the table (methods x seeds runs, one after another).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gradstarve.algorithms import build_algorithm
from gradstarve.experiments.reproduce.celeba import DEFAULT_METHODS, CelebASetup, load_celeba_task
from gradstarve.experiments.train import predict, total_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    setup = CelebASetup(preset=args.preset, methods=tuple(args.methods.split(",")), seeds=tuple(range(args.seeds)))
    start = time.perf_counter()
    task = load_celeba_task(setup, args.data_root)
    print(f"task loaded in {time.perf_counter() - start:.1f} s; {len(task.train)} training images")
    n_train = len(task.train)
    total = 0.0
    for method in setup.methods:
        config = setup.config(method, 0, n_train)
        hparams = dict(config.hparams)
        if "seed" in hparams:
            hparams["seed"] = 0
        model = task.build_model(hparams, torch.Generator().manual_seed(0)).to(device)
        algorithm = build_algorithm(method, model, hparams, task.n_groups)
        generator = torch.Generator().manual_seed(0)
        batch_size = int(hparams["batch_size"])
        times = []
        for _ in range(args.steps + 2):
            index = torch.randint(0, n_train, (batch_size,), generator=generator)
            x = task.augment(task.train.x[index], generator).to(device)
            batch = (x, task.train.y[index].to(device), task.train.group[index].to(device), index.to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            algorithm.update(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - tic)
        step = statistics.median(times[2:])
        tic = time.perf_counter()
        for split in ("val", "test"):
            predict(algorithm, task.evaluation[split].x, device=device)
        evaluation = time.perf_counter() - tic
        steps = total_steps(hparams, n_train)
        per_epoch = steps / int(hparams["epochs"]) * step + evaluation
        per_run = int(hparams["epochs"]) * per_epoch
        total += per_run * len(setup.seeds)
        print(
            f"{method}: {step:.3f} s per step (batch {batch_size}), evaluation of val + test {evaluation:.1f} s, "
            f"{per_epoch:.0f} s per epoch, {hparams['epochs']} epochs = {per_run / 60:.1f} min per run"
        )
    print(
        f"threads {torch.get_num_threads()}: extrapolated table ({len(setup.methods)} methods x {len(setup.seeds)} "
        f"seeds, one run after another): {total / 3600:.2f} h"
    )


if __name__ == "__main__":
    main()

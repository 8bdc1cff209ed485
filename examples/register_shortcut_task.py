"""Bring your own task: MNIST with a planted shortcut, registered with gradstarve, swept with ERM and Spectral
Decoupling, and tabulated.

The label is "digit < 5". In training, a bright 3x3 patch in the top-left corner agrees with the label for 90 % of
the images (the shortcut); in the test split it agrees for 10 % only, so a model that leans on the patch fails
there. Four groups: (label, patch on or off), so worst-group accuracy shows who pays for the shortcut.

    python examples/register_shortcut_task.py --data-root ../shared/data      # your own MNIST files
    python examples/register_shortcut_task.py --fake                            # no files: generated digits

Other processes (e.g. the sweep's worker processes, ``--workers 2``) find the task through
``GRADSTARVE_TASK_MODULES=register_shortcut_task`` with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from gradstarve.data.base import LabelledData
from gradstarve.experiments import sweep
from gradstarve.experiments.tasks import register_task

NAME = "patch-mnist"


def _images(data_root: str | None, n: int, seed: int, fake: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (14 x 14, in [0, 1]) and digits, from the MNIST training files or generated."""
    rng = np.random.default_rng(seed)
    if fake:  # a fixed random template per digit, 20 % of its pixels dropped
        templates = rng.random((10, 14, 14)) < 0.3
        digits = rng.integers(0, 10, n)
        return (templates[digits] * (rng.random((n, 14, 14)) > 0.2)).astype(np.float32), digits
    from gradstarve.data.mnist import load_mnist

    images, digits = (t.numpy() for t in load_mnist(data_root, "train"))
    index = rng.permutation(len(images))[:n]
    return images[index, ::2, ::2].astype(np.float32) / 255.0, digits[index].astype(np.int64)


def load_patch_mnist(
    seed: int, n: int = 6000, data_root: str | None = None, fake: bool = False
) -> dict[str, LabelledData]:
    """The task's splits (train 60 %, val 20 %, test 20 % of ``n`` images); the patch agrees with the label for 90 %
    of train / val and 10 % of test."""
    images, digits = _images(data_root, n, seed, fake)
    rng = np.random.default_rng(seed + 1)
    y = (digits < 5).astype(np.int64)
    cut = [int(0.6 * n), int(0.8 * n)]
    splits = {}
    for name, rows, agree in (
        ("train", slice(0, cut[0]), 0.9),
        ("val", slice(cut[0], cut[1]), 0.9),
        ("test", slice(cut[1], n), 0.1),
    ):
        x, label = images[rows].copy(), y[rows]
        patch = np.where(rng.random(len(label)) < agree, label, 1 - label)
        x[patch == 1, :3, :3] = 1.0
        group = torch.as_tensor(2 * label + patch)
        splits[name] = LabelledData(
            torch.as_tensor(x[:, None]),
            torch.as_tensor(label),
            group,
            ("small, no patch", "small, patch", "large, no patch", "large, patch"),
            f"{NAME}/{name}",
        )
    return splits


register_task(
    NAME,
    load_patch_mnist,
    hparams={"lr": 1e-3, "hidden": [128, 128], "steps": 300},
    options={"n": int, "data_root": (str, type(None)), "fake": bool},
    replace=True,  # re-running the module (a notebook) registers it again
)


def main(argv: list[str] | None = None) -> sweep.SweepResults:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="folder holding mnist/ (the four IDX files)")
    parser.add_argument("--fake", action="store_true", help="generated digits instead of MNIST files")
    parser.add_argument("--n", type=int, default=6000, help="images in all")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/patch-mnist"))
    args = parser.parse_args(argv)
    data = {"n": args.n, "fake": args.fake}
    spec = sweep.SweepSpec(
        datasets=(NAME,),
        algorithms=("erm", "sd"),
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        eval_every=max(1, args.steps // 5),
        data={NAME: data},
        overrides={"sd_lam": 0.1},  # λ of Eq. 25; the synthetic row's default is for the tiny test problems
    )
    summary = sweep.launch(args.out, spec, workers=0, data_root=args.data_root)  # workers=0: this process knows it
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} runs failed: {summary.failed[0].error} (see error.txt in each run)")
    results = sweep.collect(args.out, rules=["last_step", "worst_group_validation"])
    for title, table in results.display_tables().items():
        print(f"\n{title}\n{table.to_string(index=False)}")
    return results


if __name__ == "__main__":
    main()

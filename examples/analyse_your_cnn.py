"""Analyse your own CNN: does it use the shortcut, and which features does it starve?

Two-channel 12 x 12 images. The label is carried by a faint, noisy bar in channel 0 (horizontal for class 1,
vertical for class 0: the "core" feature) and, for 90 % of the images, also by a bright 2 x 2 corner patch in channel
1 (the "shortcut"). A small CNN is trained with Adam; ``FeatureAnalysis`` takes its features at initialisation
(Def. 1, the conv NTK computed layer by layer) and ``starvation_report`` compares them with the trained network's
responses (Eq. 8), aligned with the two attributes.

    python examples/analyse_your_cnn.py                       # 1,000 images, 300 steps
    python examples/analyse_your_cnn.py --out cnn-report      # also writes starvation.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from gradstarve import FeatureAnalysis, starvation_report


def shortcut_images(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``x`` ``(n, 2, 12, 12)``, ``y`` in {-1, +1}, and the per-image ``core`` and ``shortcut`` signals."""
    y = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    x = 0.5 * torch.randn(n, 2, 12, 12, generator=generator)
    strength = 0.15 * (1 + torch.rand(n, generator=generator))  # a faint bar, its contrast varying per image
    horizontal = y > 0
    x[horizontal, 0, 6, 2:10] += strength[horizontal, None]
    x[~horizontal, 0, 2:10, 6] += strength[~horizontal, None]
    agrees = torch.rand(n, generator=generator) < 0.9
    patch = torch.where(agrees, y, -y).float()
    x[:, 1, :2, :2] += 2.0 * patch[:, None, None]
    return {"x": x, "y": y, "core": strength * y, "shortcut": patch}


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 32),
        nn.ReLU(),
        nn.Linear(32, 1),
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="training images (the analysis uses --probe of them)")
    parser.add_argument("--probe", type=int, default=400, help="images the features are computed on")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps, batches of 128")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for starvation.png")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    data = shortcut_images(args.n, generator)
    torch.manual_seed(args.seed)
    model = small_cnn()
    probe = slice(0, min(args.probe, args.n))
    at_init = FeatureAnalysis(k=6).fit(model, data["x"][probe], data["y"][probe])  # before any training

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    targets = (data["y"] > 0).float()
    for _ in range(args.steps):
        batch = torch.randint(0, args.n, (128,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(data["x"][batch]).squeeze(-1), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    groups = ((data["y"][probe] > 0).long() * 2 + (data["shortcut"][probe] == data["y"][probe]).long()).numpy()
    table, figure = starvation_report(
        model,
        data["x"][probe],
        data["y"][probe],
        groups,
        attributes={"core": data["core"][probe], "shortcut": data["shortcut"][probe]},
        k=6,
        group_names=["class 0, patch disagrees", "class 0, patch agrees", "class 1, patch disagrees",
                     "class 1, patch agrees"],
        analysis=at_init,
    )  # fmt: skip
    columns = ["feature", "strength_share", "response_share", "starved", "alignment_core", "alignment_shortcut"]
    print(table[columns].round(3).to_string(index=False))
    print(table.attrs["groups"].round(3).to_string(index=False))
    for sentence in table.attrs["verdict"]:
        print(sentence)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out / "starvation.png", dpi=120, bbox_inches="tight")
    return table


if __name__ == "__main__":
    main()

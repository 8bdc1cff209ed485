"""Spectral Decoupling in your own training loop, with z(t) tracked on the side.

A tabular task with a planted shortcut: feature 0 is a weak, noisy "core" signal of the label (it holds at test),
feature 1 a clean "shortcut" that agrees with the label for 95 % of the training rows and for half of the test rows
(pure noise there). The same MLP is trained twice in a plain PyTorch loop: with ``nn.BCEWithLogitsLoss`` (ERM) and
with ``gradstarve.SpectralDecouplingLoss`` (Eq. 25, a drop-in for it). A ``FeatureTracker`` fitted at initialisation
records the responses z(t) (Eq. 8) to the network's own features, and ``starvation_report`` says at the end which
features the trained network uses and which it starves.

    python examples/sd_in_your_loop.py              # 2,000 rows, 600 steps: seconds
    python examples/sd_in_your_loop.py --lam 0.5    # a stronger penalty
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from gradstarve import FeatureTracker, SpectralDecouplingLoss, starvation_report


def shortcut_rows(n: int, agreement: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``n`` rows ``(core, shortcut, 6 noise columns)``, labels in {0, 1}; the shortcut agrees with the label for a
    fraction ``agreement`` of the rows."""
    y = torch.randint(0, 2, (n,), generator=generator).float()
    signed = 2 * y - 1
    core = signed * 0.5 + torch.randn(n, generator=generator)  # weak and noisy: 69 % accurate on its own
    agrees = torch.rand(n, generator=generator) < agreement
    shortcut = torch.where(agrees, signed, -signed) * 2.0  # clean: perfectly separable when it agrees
    noise = torch.randn(n, 6, generator=generator)
    return {
        "x": torch.cat([core[:, None], shortcut[:, None], noise], dim=1),
        "y": y,
        "core": core,
        "shortcut": shortcut,
    }


@dataclass
class Outcome:
    loss: str
    train_accuracy: float
    test_accuracy: float
    verdict: list[str]
    z_final: list[float]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x).squeeze(-1) > 0).float() == y).float().mean())


def fit(loss_name: str, lam: float, train: dict, test: dict, steps: int, seed: int) -> Outcome:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    probe = slice(0, 400)  # the features are an n x n kernel: a few hundred probe rows are plenty
    signed = 2 * train["y"][probe] - 1  # the features' labels are in {-1, +1}
    tracker = FeatureTracker(model, train["x"][probe], signed, k=5, every=max(1, steps // 10))
    criterion = SpectralDecouplingLoss(lam=lam) if loss_name == "sd" else nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps + 1):
        tracker(step)  # records z(t) every `every` steps (eval mode, no gradients)
        if step == steps:
            break
        optimizer.zero_grad()
        criterion(model(train["x"]).squeeze(-1), train["y"]).backward()
        optimizer.step()
    attributes = {"core": train["core"][probe], "shortcut": train["shortcut"][probe]}
    table, _ = starvation_report(
        model, train["x"][probe], signed, attributes=attributes, k=5, analysis=tracker.analysis
    )
    return Outcome(
        loss_name,
        accuracy(model, train["x"], train["y"]),
        accuracy(model, test["x"], test["y"]),
        table.attrs["verdict"],
        tracker.history.iloc[-1, 1:].round(3).tolist(),
    )


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training rows (and as many test rows)")
    parser.add_argument("--steps", type=int, default=600, help="full-batch Adam steps")
    parser.add_argument("--lam", type=float, default=0.1, help="λ of Eq. 25")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    train, test = shortcut_rows(args.n, 0.95, generator), shortcut_rows(args.n, 0.5, generator)
    outcomes = [fit(name, args.lam, train, test, args.steps, args.seed) for name in ("erm", "sd")]
    for outcome in outcomes:
        print(
            f"{outcome.loss}: train {outcome.train_accuracy:.1%}, test (shortcut random) "
            f"{outcome.test_accuracy:.1%}; z(T) = {outcome.z_final}"
        )
        for sentence in outcome.verdict:
            print(f"   {sentence}")
    return outcomes


if __name__ == "__main__":
    main()

"""Two-moons training with all seeds at once (Section 4, App. A.1, Fig. 1-3).

This module holds the project's one training loop outside :mod:`gradstarve.experiments.train`, and says why: the
two-moons experiments train 10 seeds of a 2-500-1 network full-batch for 10,000 steps, and run as one batched
computation (:class:`~gradstarve.models.batched_mlp.BatchedMLP`, stacked weights and ``baddbmm``) they take a
fraction of the time of 10 sequential runs (``benchmarks/two_moons.py``). The generic trainer steps one
algorithm on one model; stacking seeds is specific to this tiny, full-batch problem.

Each seed ``s`` gets its own data (``two_moons(seed=s)``) and its own initialisation (``MLP`` with a generator
seeded ``s``); the stacked networks are trained on the sum of their per-seed losses, which leaves each network's
gradient its own. Per seed the loss is the paper's mean logistic loss, plus Spectral Decoupling
``λ/2 mean(ŷ²)`` (:func:`gradstarve.penalties.spectral_decoupling`) when ``sd_lam > 0``; weight decay is the
optimiser's (``torch.optim.SGD(weight_decay=wd)`` adds ``wd θ`` to the gradient, the gradient of ``wd/2 ‖θ‖²``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from gradstarve import metrics, penalties
from gradstarve.analysis import FeatureTracker
from gradstarve.data.two_moons import two_moons
from gradstarve.models import MLP
from gradstarve.models.batched_mlp import BatchedMLP


@dataclass(frozen=True)
class MoonsSetting:
    """One two-moons training configuration (App. A.1). Defaults: the paper's Fig. 2 network and optimiser."""

    name: str
    label: str = ""
    steps: int = 10_000
    delta: float = 0.1
    rotation: float = 0.0
    n: int = 300
    noise: float = 0.1
    hidden: tuple[int, ...] = (500,)
    dropout: float = 0.0
    batch_norm: bool = False
    optimizer: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    sd_lam: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.steps < 0 or self.sd_lam < 0 or self.weight_decay < 0 or self.lr <= 0:
            raise ValueError(f"{self.name}: steps, sd_lam and weight_decay must be >= 0 and lr > 0")


#: Fig. 2: weight decay 2e-4 in all three runs, 10,000 steps (released code). SD: the released ``0.003 mean(ŷ²)``,
#: i.e. λ = 0.006 in our λ/2 convention.
FIG2_SETTINGS: tuple[MoonsSetting, ...] = (
    MoonsSetting("nonseparable", "(a) Δ < 0", delta=-0.1, weight_decay=2e-4),
    MoonsSetting("separable", "(b) Δ > 0", delta=0.1, weight_decay=2e-4),
    MoonsSetting("separable-sd", "(c) Δ > 0, SD", delta=0.1, weight_decay=2e-4, sd_lam=0.006),
)

#: Fig. 3 (released code): Δ = +0.1, 1,000 steps of SGD (lr 1e-2, momentum 0.9) unless stated.
FIG3_SETTINGS: tuple[MoonsSetting, ...] = (
    MoonsSetting("plain", "no regularisation", steps=1000),
    MoonsSetting("weight-decay", "weight decay 0.01", steps=1000, weight_decay=0.01),
    MoonsSetting("longer", "train 10x longer", steps=10_000),
    MoonsSetting("adam-small-lr", "Adam, lr 1e-4", steps=1000, optimizer="adam", lr=1e-4),
    MoonsSetting("adam-large-lr", "Adam, lr 3e-3", steps=1000, optimizer="adam", lr=3e-3),
    MoonsSetting("rotated", "data rotated 45°", steps=1000, rotation=45.0),
    MoonsSetting("dropout", "dropout 0.7", steps=1000, dropout=0.7),
    MoonsSetting("batch-norm", "batch norm", steps=1000, batch_norm=True),
    MoonsSetting("deeper", "deeper (4 hidden layers)", steps=1000, hidden=(500, 500, 500, 500)),
    MoonsSetting("sd", "Spectral Decoupling", steps=1000, sd_lam=0.006),
)


@dataclass
class MoonsResult:
    """Outcome of :func:`train_moons` for one setting over several seeds.

    Attributes:
        grid: ``(G,)`` coordinates of the square evaluation grid; ``grid_logits``: ``(S, G, G)`` logits with
            ``[s, i, j]`` at ``(grid[i], grid[j])``.
        x, y: ``(S, n, 2)`` inputs and ``(S, n)`` labels in {-1, +1} of each seed.
        steps: ``(T,)`` recorded steps; ``responses``: ``(S, T, k)`` feature responses z(t) (Eq. 8) with ``U``
            fixed at initialisation; ``strengths``: ``(S, k)``; ``label_alignment``: ``(S, k)`` ``Σ_i U_ij / √n``.
        margin_min, margin_mean: ``(S,)`` distance from the training points to each seed's decision boundary.
        train_accuracy, final_loss: ``(S,)``.
    """

    setting: MoonsSetting
    seeds: list[int]
    grid: np.ndarray
    grid_logits: np.ndarray
    x: np.ndarray
    y: np.ndarray
    steps: np.ndarray
    responses: np.ndarray
    strengths: np.ndarray
    label_alignment: np.ndarray
    margin_min: np.ndarray
    margin_mean: np.ndarray
    train_accuracy: np.ndarray
    final_loss: np.ndarray
    seconds: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Mean and standard deviation over seeds of the scalar outcomes (and the final z of each feature)."""
        row: dict = {"setting": self.setting.name, "label": self.setting.label, "seeds": len(self.seeds)}
        for name in ("margin_min", "margin_mean", "train_accuracy", "final_loss"):
            values = getattr(self, name)
            row[f"{name}_mean"], row[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
        final = np.abs(self.responses[:, -1, :])
        for j in range(final.shape[1]):
            row[f"abs_z{j + 1}_mean"], row[f"abs_z{j + 1}_std"] = float(final[:, j].mean()), float(final[:, j].std())
        row["seconds"] = self.seconds
        return row


def moons_data(setting: MoonsSetting, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked data of every seed: ``x`` ``(S, n, 2)`` float32 and labels ``(S, n)`` in {-1, +1}."""
    sets = [two_moons(setting.n, setting.noise, setting.delta, seed, setting.rotation) for seed in seeds]
    return torch.stack([d.x for d in sets]), torch.stack([d.signed_labels() for d in sets])


def initial_models(setting: MoonsSetting, seeds: Sequence[int]) -> list[MLP]:
    """The network of each seed at initialisation, drawn from a generator seeded with the seed."""
    return [
        MLP(
            2,
            setting.hidden,
            1,
            dropout=setting.dropout,
            batch_norm=setting.batch_norm,
            generator=torch.Generator().manual_seed(seed),
        )
        for seed in seeds
    ]


def _optimizer(setting: MoonsSetting, parameters) -> torch.optim.Optimizer:
    if setting.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=setting.lr, weight_decay=setting.weight_decay)
    return torch.optim.SGD(parameters, lr=setting.lr, momentum=setting.momentum, weight_decay=setting.weight_decay)


def per_seed_loss(logits: torch.Tensor, signs: torch.Tensor, sd_lam: float) -> torch.Tensor:
    """``(S,)`` mean logistic loss of each seed (the paper's ``log(1 + exp(-y ŷ))``), plus SD if ``sd_lam > 0``."""
    loss = nn.functional.softplus(-signs * logits).mean(dim=1)
    if sd_lam > 0:
        loss = loss + torch.stack([penalties.spectral_decoupling(row, sd_lam) for row in logits])
    return loss


def train_moons(
    setting: MoonsSetting,
    seeds: Sequence[int] = tuple(range(10)),
    *,
    k: int = 7,
    record_every: int = 10,
    grid_size: int = 100,
    grid_extent: float = 2.0,
    dropout_seed: int = 12345,
    progress: Callable[[int], None] | None = None,
) -> MoonsResult:
    """Train ``setting`` for every seed at once and evaluate boundaries, margins and feature responses.

    Args:
        k: number of features whose responses are tracked (``U`` from the NTK at initialisation, per seed).
        record_every: record z every this many steps (and at the last step).
        grid_size, grid_extent: the ``grid_size x grid_size`` evaluation grid on ``[-extent, extent]²`` (the paper:
            100 x 100 on [-2, 2]²).
        dropout_seed: seeds the generator of the dropout masks.
        progress: called with the number of steps done.
    """
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    start = time.perf_counter()
    x, signs = moons_data(setting, seeds)
    models = initial_models(setting, seeds)
    trackers = [FeatureTracker(model, x[i], signs[i], k=k, steps=[]) for i, model in enumerate(models)]
    batched = BatchedMLP.from_models(models)
    optimizer = _optimizer(setting, batched.parameters())
    dropout_generator = torch.Generator().manual_seed(dropout_seed)
    stochastic = setting.dropout > 0 or setting.batch_norm
    recorded_steps = []
    for step in range(setting.steps + 1):
        batched.train()
        logits = batched(x, generator=dropout_generator)[..., 0]
        if step % record_every == 0 or step == setting.steps:
            if stochastic:  # record the deterministic (eval-mode) network
                batched.eval()
                with torch.no_grad():
                    recorded = batched(x)[..., 0]
            else:
                recorded = logits.detach()
            for i, tracker in enumerate(trackers):
                tracker.record(step, recorded[i])
            recorded_steps.append(step)
        if step == setting.steps:
            final_loss = per_seed_loss(logits, signs, setting.sd_lam).detach()
            break
        loss = per_seed_loss(logits, signs, setting.sd_lam).sum()  # the sum keeps each seed's gradient its own
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1)

    batched.eval()
    grid = np.linspace(-grid_extent, grid_extent, grid_size)
    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
    with torch.no_grad():
        grid_logits = batched(points.expand(len(seeds), -1, -1))[..., 0].reshape(len(seeds), grid_size, grid_size)
        train_logits = batched(x)[..., 0]
    margins = [
        metrics.input_margin(x[i].numpy(), metrics.decision_boundary(grid, grid, grid_logits[i].numpy()))
        for i in range(len(seeds))
    ]
    accuracy = ((signs * train_logits) > 0).double().mean(dim=1)
    return MoonsResult(
        setting=setting,
        seeds=seeds,
        grid=grid,
        grid_logits=grid_logits.numpy().astype(np.float64),
        x=x.numpy(),
        y=signs.numpy(),
        steps=np.array(recorded_steps),
        responses=np.stack([t.history.to_numpy()[:, 1:] for t in trackers]),
        strengths=np.stack([t.analysis.strengths_ for t in trackers]),
        label_alignment=np.stack([t.analysis.U_.sum(axis=0) / np.sqrt(setting.n) for t in trackers]),
        margin_min=np.array([m[0] for m in margins]),
        margin_mean=np.array([m[1] for m in margins]),
        train_accuracy=accuracy.numpy(),
        final_loss=final_loss.numpy().astype(np.float64),
        seconds=time.perf_counter() - start,
        extra={"setting": asdict(setting)},
    )

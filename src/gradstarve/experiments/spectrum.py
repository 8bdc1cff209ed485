"""The NTK feature spectrum of the paper's model for a data set, at initialisation (``gradstarve ntk spectrum``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gradstarve.analysis import FeatureAnalysis
from gradstarve.data.base import LabelledData
from gradstarve.experiments.reproduce._output import save_figure, save_table
from gradstarve.models import MLP

SPECTRUM_DATASETS = ("two-moons", "colored-mnist")


@dataclass(frozen=True)
class SpectrumResult:
    dataset: str
    n: int
    analysis: FeatureAnalysis
    rows: list[dict]
    files: list[Path] = field(default_factory=list)


def load_examples(dataset: str, n: int, seed: int, data_root: Path | None) -> LabelledData:
    """``n`` training examples of ``dataset`` (two-moons: the Δ = +0.1 set; colored-mnist: the training envs)."""
    if dataset == "two-moons":
        from gradstarve.data.two_moons import two_moons

        return two_moons(n=n, delta=0.1, seed=seed)
    if dataset == "colored-mnist":
        from gradstarve.data.colored_mnist import colored_mnist

        train = colored_mnist(data_root=data_root, seed=seed)["train"]
        if n > len(train):
            raise ValueError(f"n = {n} exceeds the {len(train)} Colored MNIST training examples")
        return train.subset(slice(0, n))
    raise ValueError(f"dataset must be one of {SPECTRUM_DATASETS}, got {dataset!r}")


def paper_model(dataset: str, seed: int) -> MLP:
    """The paper's network for ``dataset`` at initialisation: 2-500-1 ReLU (two-moons, App. A.1) or
    392-300-300-1 ReLU with Xavier init (Colored MNIST, Table 3)."""
    generator = torch.Generator().manual_seed(seed)
    if dataset == "two-moons":
        return MLP(2, (500,), 1, generator=generator)
    if dataset == "colored-mnist":
        return MLP(2 * 14 * 14, (300, 300), 1, init="xavier", generator=generator)
    raise ValueError(f"dataset must be one of {SPECTRUM_DATASETS}, got {dataset!r}")


def spectrum(
    dataset: str, n: int, k: int, seed: int = 0, data_root: Path | None = None, method: str = "auto"
) -> SpectrumResult:
    """Top-``k`` features (Def. 1) of the paper's model for ``dataset`` at initialisation on ``n`` examples.

    Rows: feature index, strength ``s_j``, share of ``trace K`` (``s_j² / Σ_i K_ii``) and label alignment
    ``Σ_i U_ij / √n`` (1 when the feature's weights on the examples all agree with the labels, Def. 1).
    """
    data = load_examples(dataset, n, seed, data_root)
    model = paper_model(dataset, seed)
    analysis = FeatureAnalysis(k=k, method=method).fit(model, data.x, data.signed_labels())
    rows = [
        {
            "feature": j + 1,
            "strength": float(s),
            "trace_share": float(s**2 / analysis.trace_),
            "label_alignment": float(analysis.U_[:, j].sum() / np.sqrt(len(data))),
        }
        for j, s in enumerate(analysis.strengths_)
    ]
    return SpectrumResult(dataset, len(data), analysis, rows)


def write_spectrum(out_dir: Path, **kwargs) -> SpectrumResult:
    """Run :func:`spectrum` and write ``spectrum-<dataset>.{png,pdf,csv,json}``."""
    result = spectrum(**kwargs)
    stem = f"spectrum-{result.dataset}"
    figure = result.analysis.plot()
    figure.axes[0].set_title(f"NTK feature spectrum at initialisation: {result.dataset}, n = {result.n}")
    files = save_figure(figure, Path(out_dir), stem) + save_table(result.rows, Path(out_dir), stem)
    return SpectrumResult(result.dataset, result.n, result.analysis, result.rows, files)

"""The paper's feature analysis on a real network: CelebA's ResNet at initialisation, after ERM and after SD.

Def. 1's features are those of the network at initialisation, ``Y Φ₀ = U S V^T``, on ``n`` validation images;
Eq. 8's responses ``z = U^T Y ŷ`` are read from the same network at initialisation, after ERM and after SD (Eq. 28,
the cpu preset's setting 0) training. The two trained networks are Table 2's own runs, planned through the one
sweep with Table 2's configuration (search seed, setting 0), so a Table 2 campaign in the same ``--runs`` folder
provides them and nothing is trained twice. ERM and SD start from the same network (same seed, same builder), so
they share the features and the comparison is about what each objective did with them.

Each feature is aligned (:func:`gradstarve.analysis.feature_alignment`: the within-class correlation of its
per-example value with the attribute) with the label (``Blond_Hair``) and with the attributes in
:data:`ATTRIBUTES`. The question, from Thm. 2 and Sec. 4: does SD move the response onto the features aligned with
the target, away from those aligned with gender? The part answers with the response-weighted alignment
``A(attribute) = Σ_j response_share_j |alignment_j|`` per network, beside the per-feature table and per-model
verdicts, and says plainly when SD changes nothing.

Cost: the Gram of the ResNet's NTK (layer by layer, :mod:`gradstarve.ntk_structured`) grows as ``n²``; it is
computed once, in float32 (strengths agree with float64 to about 1e-7 relative here). The quick setting trains the
two networks on Table 2's quick subset (2,000 images, 2 epochs, 32 px) and analyses 256 images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from gradstarve.analysis import FeatureAnalysis, starvation_report
from gradstarve.data.celeba import split_attributes
from gradstarve.data.paths import resolve_data_root
from gradstarve.experiments import sweep
from gradstarve.experiments.analyse import load_run_networks, write_starvation_report
from gradstarve.experiments.reproduce.base import Progress, Reproduction, evidence
from gradstarve.experiments.reproduce.celeba import (
    METHODS,
    CelebASetup,
    load_celeba_task,
    search_spec,
)
from gradstarve.experiments.runs import inspect_run
from gradstarve.experiments.tables import markdown_table

#: Attributes every feature is aligned with, besides the label (Blond_Hair): gender (the spurious attribute of
#: Table 2's groups) and four others that change how a face looks.
ATTRIBUTES: tuple[str, ...] = ("Male", "Eyeglasses", "Smiling", "Young", "Wearing_Hat")
#: The trained networks analysed: Table 2's methods, at their setting 0 on the search seed.
NETWORKS: tuple[str, ...] = ("erm", "sd")
NETWORK_LABELS = {"initial": "initialisation", "erm": "ERM", "sd": "SD (Eq. 28)"}
FULL_N, QUICK_N, K = 2000, 256, 10
#: Table 2's cpu plan (benchmarks/README.md): the runs analysed are that campaign's.
FULL_RESOLUTION, FULL_EPOCHS = 32, 6


@dataclass(frozen=True)
class FeaturesSetup:
    """What to analyse: ``n`` validation images (default 2,000; quick 256), ``k`` features, the Table 2 runs of
    :data:`NETWORKS` at ``resolution`` and ``epochs`` (Table 2's cpu plan) or at Table 2's quick settings;
    ``celeba`` replaces that Table 2 set-up outright (e.g. a tiny one in tests)."""

    quick: bool = False
    n: int | None = None
    k: int = K
    resolution: int = FULL_RESOLUTION
    epochs: int = FULL_EPOCHS
    celeba: CelebASetup | None = None

    @property
    def n_images(self) -> int:
        return self.n if self.n is not None else (QUICK_N if self.quick else FULL_N)

    def table2(self) -> CelebASetup:
        """The Table 2 set-up whose search-seed setting-0 runs are the networks analysed (same folder names as the
        ``gradstarve reproduce celeba --resolution R --epochs E`` campaign)."""
        if self.celeba is not None:
            return replace(self.celeba, methods=NETWORKS, n_search=0).resolved()
        if self.quick:
            return CelebASetup(quick=True, methods=NETWORKS, n_search=0).resolved()
        hparams = {method: {"epochs": self.epochs} for method in METHODS}  # as the CLI's --epochs
        setup = CelebASetup(methods=NETWORKS, seeds=(0,), n_search=0, resolution=self.resolution, hparams=hparams)
        return setup.resolved()


def response_weighted_alignment(table: pd.DataFrame, column: str) -> float:
    """``Σ_j response_share_j · |alignment_j|``: how much of the network's response sits on features aligned with
    ``column``'s attribute (1: all of it on perfectly aligned features, 0: none)."""
    return float((table["response_share"] * table[column].abs()).sum())


def _plot(tables: dict[str, pd.DataFrame], alignment_columns: list[str], path: Path) -> Path:
    first = next(iter(tables.values()))
    features = first["feature"].to_numpy()
    fig = Figure(figsize=(9, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(tables)
    for i, (name, table) in enumerate(tables.items()):
        top.bar(features + (i - (len(tables) - 1) / 2) * width, table["response_share"], width, label=name)
    top.plot(features, first["strength_share"], "k.--", label="strength share (at initialisation)")
    top.set_ylabel("share of the response z²")
    top.set_yscale("log")
    top.legend(fontsize=8)
    width = 0.8 / len(alignment_columns)
    for i, column in enumerate(alignment_columns):
        offset = (i - (len(alignment_columns) - 1) / 2) * width
        bottom.bar(features + offset, first[column], width, label=column.removeprefix("alignment_"))
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_ylabel("alignment (within-class corr.)")
    bottom.set_xlabel("feature j of the network at initialisation (Def. 1), strongest first")
    bottom.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _load_networks(task: Any, runs_dir: Path, spec: sweep.SweepSpec) -> dict[str, Any]:
    networks: dict[str, Any] = {}
    for run in sweep.plan(spec):
        inspection = inspect_run(runs_dir / run.folder_name, run.config)
        if not inspection.finished:
            raise RuntimeError(
                f"the {run.method} run {run.folder_name} did not finish ({inspection.state}); rerun to resume it"
            )
        _, _, initial, trained = load_run_networks(runs_dir / run.folder_name, task=task)
        networks.setdefault("initial", initial)
        if any(
            not torch.equal(a, b)
            for a, b in zip(networks["initial"].state_dict().values(), initial.state_dict().values(), strict=True)
        ):
            raise RuntimeError(f"{run.method}'s initial network differs from {NETWORKS[0]}'s: the features differ")
        networks[str(run.method)] = trained
    return networks


def compare_networks(tables: dict[str, pd.DataFrame], alignment_columns: list[str]) -> tuple[pd.DataFrame, str, str]:
    """Per network: the response-weighted alignment with each attribute and the validation accuracy per group;
    then whether SD moved response onto label-aligned features (by more than 0.01, without more on ``Male``)."""
    weighted = pd.DataFrame(
        [
            {"network": label, **{c.removeprefix("alignment_"): response_weighted_alignment(t, c) for c in
                                   alignment_columns},
             **{f"val acc. {g}": a for g, a in zip(t.attrs["groups"]["group"], t.attrs["groups"]["accuracy"],
                                                    strict=True)}}
            for label, t in tables.items()
        ]
    )  # fmt: skip
    erm, sd = (
        weighted.set_index("network").loc[NETWORK_LABELS["erm"]],
        weighted.set_index("network").loc[NETWORK_LABELS["sd"]],
    )
    moved = sd["label"] - erm["label"]
    gender = sd["Male"] - erm["Male"]
    shifts = moved > 0.01 and gender <= 0.01
    finding = (
        "SD moves response onto target-aligned features, as Thm. 2 and Sec. 4 predict"
        if shifts
        else "SD does not move response onto target-aligned features here (the prediction does not show)"
    )
    verdict = (
        f"Response-weighted alignment with the label: ERM {erm['label']:.3f}, SD {sd['label']:.3f} "
        f"({moved:+.3f}); with Male: ERM {erm['Male']:.3f}, SD {sd['Male']:.3f} ({gender:+.3f}). {finding}."
    )
    return weighted, finding, verdict


def run_features(
    out_dir: Path | str,
    setup: FeaturesSetup = FeaturesSetup(),
    *,
    data_root: Path | str | None = None,
    runs_dir: Path | str | None = None,
    workers: int = 0,
    threads_per_run: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> Reproduction:
    """Train (or find) the ERM and SD networks, then analyse them; write ``features.md``, ``features.png``, one
    starvation report per network and ``features.csv`` into ``out_dir``."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(runs_dir).absolute() if runs_dir is not None else (out / "runs").absolute()
    table2 = setup.table2()
    task = load_celeba_task(table2, data_root)
    spec = search_spec(table2, len(task.train))
    summary = sweep.launch(
        out / "sweep", spec, runs_dir=runs, workers=workers, threads_per_run=threads_per_run,
        data_root=data_root, device=device,
    )  # fmt: skip
    if summary.failed:
        raise RuntimeError("; ".join(f"{o.folder_name}: {o.state} ({o.error})" for o in summary.failed))
    trained_seconds = time.perf_counter() - start
    networks = _load_networks(task, runs, spec)

    val = task.evaluation["val"]
    n = min(setup.n_images, len(val))
    index = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:n].sort().values
    data = val.subset(index)
    x = data.x.float()
    signed = 2 * data.y - 1
    extra = split_attributes(resolve_data_root(data_root), "val", ATTRIBUTES)
    attributes = {name: torch.from_numpy(values)[index] for name, values in extra.items()}
    features_start = time.perf_counter()
    at_init = FeatureAnalysis(k=setup.k, method="dense", dtype=torch.float32, progress=progress)
    at_init.fit(networks["initial"], x, signed)
    feature_seconds = time.perf_counter() - features_start

    tables, files = {}, []
    for name, network in networks.items():
        label = NETWORK_LABELS[name]
        table, figure = starvation_report(
            network, x, signed, data.group, attributes=attributes, k=setup.k,
            group_names=list(data.group_names), analysis=at_init,
        )  # fmt: skip
        tables[label] = table
        description = (
            f"{label} network of CelebA (Blond_Hair, {n} validation images); features of the network at "
            "initialisation (Def. 1), responses of this one (Eq. 8)."
        )
        files += write_starvation_report(table, figure, out / name, f"Starvation diagnosis: {label}", description)

    alignment_columns = ["alignment_label", *[f"alignment_{a}" for a in ATTRIBUTES]]
    first = next(iter(tables.values()))
    per_feature = first[["feature", "strength_share", *alignment_columns]].copy()
    for label, table in tables.items():
        per_feature[f"response_share ({label})"] = table["response_share"]
        per_feature[f"starved ({label})"] = table["starved"]
    weighted, finding, verdict = compare_networks(tables, alignment_columns)
    figure_path = _plot(tables, alignment_columns[:2] + alignment_columns[2:4], out / "features.png")
    per_feature.to_csv(out / "features.csv", index=False)
    notes = [
        verdict,
        *[f"{label}: {' '.join(t.attrs['verdict'])}" for label, t in tables.items()],
        f"{n} validation images at {table2.resolution} px; networks: Table 2's {', '.join(NETWORKS)} runs at "
        f"setting 0 on seed {table2.search_seed} ({', '.join(r.folder_name for r in sweep.plan(spec))}, in {runs}).",
        f"Time: the networks {trained_seconds:.0f} s (seconds when Table 2's runs were already there), the features "
        f"(dense layer-wise NTK, n = {n}, float32) {feature_seconds:.0f} s.",
    ]
    text = "\n".join(
        [
            "# Def. 1 and Eq. 8 on CelebA's ResNet: initialisation, ERM, SD",
            "",
            *[f"- {note}" for note in notes],
            "",
            "## Response-weighted alignment and validation accuracy per group",
            "",
            markdown_table(weighted.round(3)),
            "## Features (of the network at initialisation) and each network's response share",
            "",
            markdown_table(per_feature.round(4)),
            "![features](features.png)",
            "",
        ]
    )
    (out / "features.md").write_text(text)
    files += [out / "features.md", figure_path, out / "features.csv"]
    return Reproduction(
        name="celeba-features",
        title="Def. 1 / Eq. 8 on CelebA's ResNet: which features ERM and SD use",
        tables={"response-weighted alignment": weighted, "features": per_feature},
        figures=[figure_path],
        notes=notes,
        seconds=time.perf_counter() - start,
        files=files,
        evidence=evidence(quick=True) if setup.quick else f"no paper number; {finding}",
    )


def reproduce(
    out_dir: Path | str,
    *,
    quick: bool = False,
    data_root: Path | str | None = None,
    progress: Progress | None = None,
) -> Reproduction:
    """The registry's entry point (``gradstarve reproduce``)."""
    return run_features(out_dir, FeaturesSetup(quick=quick), data_root=data_root)

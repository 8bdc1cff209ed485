"""Table 2's notes and files: :func:`write_celeba` runs (or reads) the campaign and writes ``table2.md``,
``search.md``, the CSVs and ``table2_groups.png``; :func:`reproduce` is the registry's entry point."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradstarve.experiments.reproduce._output import markdown_table, save_figure, save_table, save_text
from gradstarve.experiments.reproduce.base import Progress, Reproduction, evidence, pngs
from gradstarve.experiments.reproduce.celeba.plan import (
    ATTRIBUTE,
    GROUP_NAMES,
    LABELS,
    PAPER_SELECTION,
    SEARCH_RULE,
    TARGET,
    CelebASetup,
)
from gradstarve.experiments.reproduce.celeba.runs import run_celeba
from gradstarve.experiments.reproduce.celeba.tables import (
    describe_hparams,
    group_rows,
    groups_display,
    groups_markdown,
    hparam_rows,
    plot_groups,
    search_markdown,
    seed_results,
    table2_display,
    table2_markdown,
    table2_rows,
    verdict_rows,
    verdict_text,
)
from gradstarve.experiments.reproduce.paper_numbers import PAPER_RUNS
from gradstarve.experiments.tasks import Task
from gradstarve.models.resnet import PRESETS


def celeba_notes(
    setup: CelebASetup,
    table: Sequence[Mapping[str, Any]],
    group_counts: Mapping[str, Mapping[str, int]],
    hparams_by_method: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """The caveats a reader of the table must know: data, model, pretraining, hyperparameters, seeds, selection,
    and how wide the worst group's confidence interval is."""
    setup = setup.resolved()
    preset = PRESETS[setup.preset]
    resolution = setup.resolution or preset.resolution
    train = group_counts.get("train", {})
    rare = train.get(GROUP_NAMES[3], 0)
    where = "the cpu preset's, chosen for training from scratch on 2 cores" if setup.preset == "cpu" else "the paper's"
    notes = [
        f"Data: the CelebA copy used here has {sum(train.values()):,} training images with {rare:,} blond males "
        "(the full CelebA used by the paper: 162,770 and 1,387); validation and test are the official splits' "
        "images present in the copy. Numbers are not directly comparable with the paper's.",
        f"Model: {preset.description}"
        + (
            f"; run here at {resolution} x {resolution} instead of the preset's {preset.resolution} x "
            f"{preset.resolution} (`--resolution {resolution}`)"
            if resolution != preset.resolution
            else ""
        )
        + " (paper: ResNet-50 at 224 x 224).",
        "Pretraining: "
        + (
            f"ImageNet weights from {setup.pretrained_weights}."
            if setup.pretrained
            else "none: trained from scratch (no ImageNet weights are available offline here); the paper starts "
            "from an ImageNet-pretrained ResNet-50 (Sagawa et al.'s set-up)."
        ),
        f"Hyperparameters ({where}): {describe_hparams(hparams_by_method)}.",
        f"Seeds: {len(setup.seeds)} per method (the paper: {PAPER_RUNS}); ± is the std over seeds (ddof = 0).",
        "Selection: both rules are reported; the paper selects by the best average validation accuracy "
        "(average_validation). LfF's number in the paper is Nam et al.'s (ResNet-18, no average reported); JTT is "
        "not in the paper's Table 2.",
    ]
    rule = PAPER_SELECTION if any(row["selection"] == PAPER_SELECTION for row in table) else table[0]["selection"]
    shown = [row for row in table if row["selection"] == rule]
    if shown:
        intervals = ", ".join(
            f"{row['label']} {row['worst_group_mean']:.1f}% [{row['worst_group_ci_low']:.1f}, "
            f"{row['worst_group_ci_high']:.1f}] (n = {row['worst_group_n']}, {row['worst_group']})"
            for row in shown
        )
        widest = max((row["worst_group_ci_high"] - row["worst_group_ci_low"]) / 2 for row in shown)
        notes.append(
            f"Uncertainty: one run's worst-group accuracy is a proportion over a small test group; 95% "
            f"Clopper-Pearson intervals at the mean ({rule}): {intervals}. Up to ±{widest:.0f} points, against "
            "paper stds of 1-2 points: differences in paper-std units are only indicative."
        )
    if setup.quick:
        notes.insert(0, "QUICK RUN: a smoke test (one seed, a training subset, 2 epochs); the numbers mean nothing.")
    return notes


def table2_text(
    title: str,
    setup: CelebASetup,
    table: Sequence[Mapping[str, Any]],
    groups: Sequence[Mapping[str, Any]],
    group_counts: Mapping[str, Mapping[str, int]],
    notes: Sequence[str],
    hparams: Sequence[Mapping[str, Any]],
) -> str:
    """``table2.md``: the table, the per-group accuracies, the group counts, the notes and the hyperparameters."""
    count_table = markdown_table(
        [{"split": split, **{g: f"{c:,}" for g, c in counts.items()}} for split, counts in group_counts.items()]
    )
    return "\n\n".join(
        [
            f"# {title}",
            f"Preset `{setup.preset}`, methods {', '.join(setup.methods)}, seeds {list(setup.seeds)}. Accuracies in "
            "percent; Δ = (ours - paper) / paper std.",
            table2_markdown(table),
            "## Per-group test accuracy (mean ± std over seeds)",
            groups_markdown(groups),
            "## Group counts",
            count_table,
            "## Notes",
            "\n".join(f"- {note}" for note in notes),
            "## Hyperparameters",
            markdown_table(hparams),
        ]
    )


def write_celeba(
    out_dir: Path | str,
    setup: CelebASetup | None = None,
    *,
    runs_dir: Path | str | None = None,
    data_root: Path | str | None = None,
    device: str = "cpu",
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    task: Task | None = None,
    report_only: bool = False,
    workers: int = 0,
    threads_per_run: int | None = None,
    tensorboard: bool = False,
) -> Reproduction:
    """Run (or resume) the search and the final seeds and write ``search.md`` (+ ``.csv``), ``table2.md``,
    ``table2.{csv,json}``, ``table2_groups.{csv,json}``, ``table2_seeds.{csv,json}``, ``table2_hparams.{csv,json}``,
    ``table2_verdict.{csv,json}`` and ``table2_groups.{png,pdf}`` into ``out_dir``.

    Raises:
        DataMissingError: no CelebA under ``data_root``.
    """
    start = time.perf_counter()
    setup = (setup or CelebASetup()).resolved()
    out_dir = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir is not None else out_dir / "runs"
    runs = run_celeba(
        setup,
        runs_dir,
        data_root=data_root,
        device=device,
        progress=progress,
        report=report,
        task=task,
        report_only=report_only,
        specs_dir=out_dir,
        workers=workers,
        threads_per_run=threads_per_run,
        tensorboard=tensorboard,
    )
    search_text = (
        f"# CelebA hyperparameter search (seed {setup.search_seed}, selected by {SEARCH_RULE} on validation data)"
        f"\n\n{search_markdown(runs.search)}\n"
    )
    files = save_text(search_text, out_dir, "search.md")
    if runs.search:
        pd.DataFrame(runs.search).to_csv(out_dir / "search.csv", index=False)
        files.append(out_dir / "search.csv")
    per_seed = seed_results(runs.metrics, runs.steps_per_epoch)
    if not per_seed:
        waiting = sorted({LABELS[m] for m, _ in runs.missing})
        raise ValueError(
            "no final run has finished yet (" + ", ".join(waiting) + "); the search so far is in "
            f"{out_dir / 'search.md'}. Launch without --report-only to train"
        )
    table = table2_rows(per_seed)
    groups = group_rows(per_seed)
    configs = {m: h for m, h in runs.chosen.items() if any(key[0] == m for key in runs.metrics)}
    hparams = hparam_rows(configs)
    verdict = verdict_rows(per_seed)
    notes = celeba_notes(setup, table, runs.group_counts, configs)
    notes += verdict_text(verdict)
    if runs.missing:
        listing = "; ".join(f"{LABELS[m]} seed {s}" for m, s in runs.missing)
        notes.insert(0, f"INCOMPLETE: final runs not finished, not counted: {listing}.")
    notes += [f"Not counted: {problem}" for problem in runs.problems]

    files += save_table(table, out_dir, "table2")
    if verdict:
        files += save_table(verdict, out_dir, "table2_verdict")
    files += save_table(groups, out_dir, "table2_groups")
    files += save_table(per_seed, out_dir, "table2_seeds")
    files += save_table(hparams, out_dir, "table2_hparams")
    figures = save_figure(plot_groups(per_seed), out_dir, "table2_groups")
    files += figures
    title = f"Table 2: CelebA ({TARGET} vs {ATTRIBUTE}), worst-group and average test accuracy"
    text = table2_text(title, setup, table, groups, runs.group_counts, notes, hparams)
    files += save_text(text + "\n", out_dir, "table2.md")
    return Reproduction(
        name="celeba",
        title=title,
        tables={
            "Table 2 (ours beside the paper)": pd.DataFrame(table2_display(table)),
            "per-group test accuracy": pd.DataFrame(groups_display(groups)),
        },
        data={
            "table2": pd.DataFrame(table),
            "groups": pd.DataFrame(groups),
            "seeds": pd.DataFrame(per_seed),
            "hparams": pd.DataFrame(hparams),
            "verdict": pd.DataFrame(verdict),
            "search": pd.DataFrame(runs.search),
        },
        figures=pngs(figures),
        notes=notes,
        seconds=time.perf_counter() - start,
        files=files,
        evidence=evidence(
            quick=setup.quick,
            sigmas=[row["worst_group_diff_in_paper_std"] for row in table if row["selection"] == "average_validation"],
            what="worst-group test accuracy, the paper's average-validation rule",
        ),
    )


def reproduce(
    out_dir: Path | str,
    *,
    quick: bool = False,
    data_root: Path | str | None = None,
    progress: Progress | None = None,
) -> Reproduction:
    """The registry's entry point (``gradstarve reproduce``): Table 2 on the CPU preset, ``--quick`` for a smoke run."""
    return write_celeba(out_dir, CelebASetup(quick=quick), data_root=data_root)

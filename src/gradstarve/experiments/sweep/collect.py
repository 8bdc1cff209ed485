"""Collecting a sweep: every finished run's selected evaluation under each selection rule, aggregated per
(data set, algorithm) over seeds, with the paper beside ours where it has a number (:mod:`..compare`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradstarve.experiments import selection
from gradstarve.experiments.compare import difference_in_std, paper_number, plus_minus
from gradstarve.experiments.execute import (
    PlannedRun,
)
from gradstarve.experiments.reproduce.base import Reproduction
from gradstarve.experiments.runs import (
    inspect_run,
    nonfinite_metrics,
)
from gradstarve.experiments.sweep.planning import plan
from gradstarve.experiments.sweep.spec import RESULTS_DIR, open_spec, runs_root
from gradstarve.experiments.tables import latex_table, markdown_table


# --------------------------------------------------------------------------------------------------------------
# Collecting: model selection and tables
# --------------------------------------------------------------------------------------------------------------
def _metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = {key for row in rows for key in row}
    splits = sorted({key.rsplit("/", 1)[0] for key in keys if key.endswith("/accuracy") and key != "train/accuracy"})
    ordered = ["train"] if "train/accuracy" in keys else []
    ordered += [s for s in ("val", "test") if s in splits] + [s for s in splits if s not in ("train", "val", "test")]
    columns = [f"{split}/accuracy" for split in ordered]
    columns += [f"{s}/worst_group_accuracy" for s in ("val", "test") if f"{s}/worst_group_accuracy" in keys]
    return columns


@dataclass
class SweepResults:
    """:func:`collect`'s outcome: ``table`` has one row per (dataset, algorithm, rule) with, per metric ``m`` (in
    percent), ``m mean``, ``m std`` and, where the paper reports it, ``m paper``, ``m paper std``, ``m Δ/σ``."""

    table: pd.DataFrame
    metrics: list[str]
    selected: list[dict[str, Any]]
    notes: list[str]
    files: list[Path] = field(default_factory=list)

    def display_tables(self) -> dict[str, pd.DataFrame]:
        """One formatted table per rule ("mean ± std" strings), for markdown / LaTeX / reports."""
        tables = {}
        for rule, part in self.table.groupby("rule", sort=False):
            shown = pd.DataFrame(
                {
                    "dataset": part["dataset"],
                    "algorithm": part["algorithm"],
                    "hparams": part["hparams"],
                    "seeds": part["seeds"],
                }
            )
            for metric in self.metrics:
                if f"{metric} mean" not in part or part[f"{metric} mean"].isna().all():
                    continue
                shown[metric] = [
                    plus_minus(m, s) for m, s in zip(part[f"{metric} mean"], part[f"{metric} std"], strict=True)
                ]
                if f"{metric} paper" in part and part[f"{metric} paper"].notna().any():
                    shown[f"{metric} (paper)"] = [
                        plus_minus(m, s)
                        for m, s in zip(part[f"{metric} paper"], part[f"{metric} paper std"], strict=True)
                    ]
                    shown[f"{metric} Δ/σ"] = [_signed(v) for v in part[f"{metric} Δ/σ"]]
            rule_info = selection.get_rule(str(rule))
            tables[f"{rule}: {rule_info.description}"] = shown.reset_index(drop=True)
        return tables

    def as_reproduction(self, name: str = "sweep", title: str = "Sweep results") -> Reproduction:
        return Reproduction(name, title, tables=self.display_tables(), notes=list(self.notes), files=list(self.files))


def _signed(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else f"{value:+.1f}"


def collect(
    sweep_dir: Path | str, rules: Sequence[str] | None = None, out_dir: Path | str | None = None
) -> SweepResults:
    """Select (every rule, or ``rules``) among the sweep's finished runs and write the tables.

    For each (dataset, algorithm) and rule: each run's evaluation step is picked by the rule; the hyperparameter
    setting with the best mean score over its seeds is chosen (:func:`~gradstarve.experiments.selection.
    select_hyperparameters`; ``last_step`` has no score and reports the default setting, the paper's protocol);
    the table gives the mean ± std over the chosen setting's seeds of each metric at the picked steps. A rule that
    needs a split the runs do not evaluate (e.g. ``val``) is skipped for that group, with a note. Unfinished runs
    are left out, with a note. Writes ``results.{md,csv,tex}`` and ``selected.json`` into ``out_dir`` (default
    ``sweep_dir/results``).
    """
    sweep_dir = Path(sweep_dir)
    rules = list(rules) if rules is not None else list(selection.RULES)
    for rule in rules:
        selection.get_rule(rule)
    runs = plan(open_spec(sweep_dir))
    root = runs_root(sweep_dir)
    notes: list[str] = []
    groups: dict[tuple[str, str], dict[int, list[tuple[PlannedRun, list[dict]]]]] = {}
    unfinished = 0
    for run in runs:
        inspection = inspect_run(root / run.folder_name, run.config)
        if inspection.state == "damaged":
            notes.append(f"damaged run left out: {inspection.problem}")
            continue
        if not inspection.finished:
            unfinished += 1
            continue
        nonfinite = nonfinite_metrics(inspection.rows)
        if nonfinite:
            notes.append(f"diverged run left out (non-finite {', '.join(nonfinite[:3])}): {run.folder_name}")
            continue
        key = (run.config.dataset, run.method)
        groups.setdefault(key, {}).setdefault(run.hparams_index, []).append((run, inspection.rows))
        for note in inspection.notes:
            if note not in notes:
                notes.append(note)
    if unfinished:
        notes.append(f"{unfinished} of {len(runs)} runs are not finished and are left out")
    if not groups:
        raise ValueError(f"no finished runs in {root}: launch the sweep first")
    all_rows = [row for settings in groups.values() for seeds in settings.values() for _, rows in seeds for row in rows]
    metrics = _metric_columns(all_rows)
    records, selected = [], []
    for (dataset, algorithm), settings in groups.items():
        data = next(iter(settings.values()))[0][0].config.data
        for rule in rules:
            candidates = settings if selection.get_rule(rule).score_key is not None else {0: settings.get(0, [])}
            candidates = {index: seeds for index, seeds in candidates.items() if seeds}
            if not candidates:
                notes.append(f"{dataset}/{algorithm}: {rule} reports the default setting, which has no finished run")
                continue
            try:  # never the untrained network, and for staged methods (JTT) their last stage only
                chosen = selection.select_hyperparameters(
                    {
                        index: [selection.candidate_rows(rows) for _, rows in seeds]
                        for index, seeds in candidates.items()
                    },
                    rule,
                )
            except ValueError as error:
                notes.append(f"{dataset}/{algorithm}: rule {rule} skipped: {error}")
                continue
            chosen_runs = [run for run, _ in candidates[chosen.key]]
            record: dict[str, Any] = {
                "dataset": dataset,
                "algorithm": algorithm,
                "rule": rule,
                "oracle": selection.get_rule(rule).uses_test,
                "hparams": chosen_runs[0].hparams_label,
                "seeds": len(chosen.rows),
                "candidates": chosen.candidates,
                "validation score": chosen.validation_score if selection.get_rule(rule).score_key else float("nan"),
            }
            for metric in metrics:
                values = [100.0 * float(row[metric]) for row in chosen.rows if row.get(metric) is not None]
                record[f"{metric} mean"], record[f"{metric} std"] = selection.mean_std(values)
                paper = paper_number(dataset, chosen_runs[0].config.algorithm, metric, data)
                if paper is not None:
                    record[f"{metric} paper"] = paper[0]
                    record[f"{metric} paper std"] = paper[1] if paper[1] is not None else float("nan")
                    diff = difference_in_std(record[f"{metric} mean"], paper)
                    record[f"{metric} Δ/σ"] = float("nan") if diff is None else diff
            records.append(record)
            selected.append(
                {
                    "dataset": dataset,
                    "algorithm": algorithm,
                    "rule": rule,
                    "hparams_index": chosen.key,
                    "hparams": dict(chosen_runs[0].config.hparams),
                    "runs": [run.folder_name for run in chosen_runs],
                    "steps": [row["step"] for row in chosen.rows],
                    "validation_score": chosen.validation_score if selection.get_rule(rule).score_key else None,
                }
            )
    if not records:
        raise ValueError(
            f"no table for rule(s) {', '.join(rules)}: "
            + "; ".join(notes)
            + ". Rules that select on 'val' need a validation split: launch with e.g. --data val_fraction=0.1, "
            "or collect with --rule last_step"
        )
    if any(selection.get_rule(rule).uses_test for rule in rules):
        notes.append("test_domain_oracle selects on the test split: an oracle, not an honest estimate")
    results = SweepResults(pd.DataFrame.from_records(records), metrics, selected, notes)
    results.files = write_results(results, Path(out_dir) if out_dir is not None else sweep_dir / RESULTS_DIR)
    return results


def write_results(results: SweepResults, out_dir: Path) -> list[Path]:
    """Write ``results.csv`` (every number), ``results.md`` and ``results.tex`` (one table per rule) and
    ``selected.json`` (the chosen hyperparameters, runs and steps) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("results.csv", "results.md", "results.tex", "selected.json")]
    results.table.to_csv(paths[0], index=False)
    tables = results.display_tables()
    notes = "".join(f"- {note}\n" for note in results.notes)
    paths[1].write_text(
        "".join(f"## {title}\n\n{markdown_table(table)}\n" for title, table in tables.items())
        + (f"Notes:\n\n{notes}" if notes else "")
    )
    paths[2].write_text("\n".join(latex_table(table, caption=title) for title, table in tables.items()))
    paths[3].write_text(json.dumps(results.selected, indent=2, default=str) + "\n")
    return paths

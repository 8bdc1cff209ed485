"""Table 1, Fig. 4 and the λ search as pure functions of metrics rows: per-row selection by both rules, mean ± std
with the paper beside ours in its std units, the displays and the Fig. 4 plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from gradstarve.data.colored_mnist import FIG4_VARIANTS
from gradstarve.experiments.compare import plus_minus, sigma
from gradstarve.experiments.reproduce._output import markdown_table
from gradstarve.experiments.reproduce.colored_mnist.plan import (
    FIG4_METHODS,
    METHODS,
    RULE_LABELS,
    RULES,
    ColoredMNISTSetup,
    LambdaSearch,
    finished_rows,
    method_config,
)
from gradstarve.experiments.reproduce.paper_numbers import FIG4_ACCURACY, FIG4_ENTROPY, TABLE1, difference_in_std
from gradstarve.experiments.selection import mean_std, select_step


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
def _percent(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [100.0 * float(row[key]) for row in rows if key in row and row[key] is not None]


def _method_rows(setup: ColoredMNISTSetup, runs_root: Path, search: LambdaSearch) -> dict[str, list[list[dict]]]:
    """Finished runs' metrics rows of every method (one list per finished seed)."""
    out: dict[str, list[list[dict]]] = {}
    for method in setup.methods:
        rule = METHODS[method].lambda_rule
        if rule is not None and rule not in search.chosen:
            out[method] = []
            continue
        runs = [finished_rows(runs_root, method_config(setup, method, s, search.chosen.get(rule))) for s in setup.seeds]
        out[method] = [rows for rows in runs if rows]
    return out


def _summary_row(
    key: str, label: str, rule: str, picked: Sequence[Mapping[str, Any]], planned: int, paper: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"method": key, "label": label, "selection": rule, "seeds_finished": len(picked)}
    row["seeds_planned"] = planned
    for split in ("train", "test", "val"):
        mean, std = mean_std(_percent(picked, f"{split}/accuracy"))
        row[f"{split}_mean"], row[f"{split}_std"] = mean, std
        if split == "val":
            continue
        reference = TABLE1.get(paper, {}).get(split) if paper else None
        row[f"paper_{split}_mean"] = reference[0] if reference else None
        row[f"paper_{split}_std"] = reference[1] if reference else None
        row[f"{split}_diff_in_paper_std"] = difference_in_std(mean, reference) if picked and reference else None
    steps = [int(p["step"]) for p in picked]
    row["step_mean"] = float(np.mean(steps)) if steps else None
    row["step_min"], row["step_max"] = (min(steps), max(steps)) if steps else (None, None)
    return row


def table1_rows(setup: ColoredMNISTSetup, runs_root: Path, search: LambdaSearch) -> list[dict[str, Any]]:
    """Table 1 under both selection rules, plus two diagnostic rows under rule (a): ERM and the released SD at the
    step where the released schedule switches (450, scaled), to show what happens after the switch."""
    by_method = _method_rows(setup, runs_root, search)
    rules = [r for r in RULES if r != "training_domain_validation" or setup.val_fraction > 0]
    switch = setup.switch_step()
    diagnostics = {
        "erm": ("erm_at_sd_switch", f"ERM stopped at step {switch} (diagnostic)"),
        "sd": ("sd_at_sd_switch", f"SD, released schedule, at its switch, step {switch} (diagnostic)"),
    }
    rows = []
    for rule in rules:
        for method, runs in by_method.items():
            spec = METHODS[method]
            label = spec.label.format(switch=switch)
            if spec.lambda_rule is not None and spec.lambda_rule in search.chosen:
                label += f", λ={search.chosen[spec.lambda_rule]:g}"
            picked = [select_step(r, rule) for r in runs]
            rows.append(_summary_row(method, label, rule, picked, len(setup.seeds), spec.paper))
            if method in diagnostics and rule == "last_step":
                at_switch = [row for r in runs for row in r if row["step"] == switch]
                if at_switch:
                    key, text = diagnostics[method]
                    rows.append(_summary_row(key, text, f"fixed step {switch}", at_switch, len(setup.seeds), None))
    return rows


def fig4_rows(setup: ColoredMNISTSetup, runs_root: Path, search: LambdaSearch) -> list[dict[str, Any]]:
    """Accuracy (%) and mean predictive entropy (nats) on the four test variants, per method and rule."""
    by_method = _method_rows(setup, runs_root, search)
    rules = [r for r in RULES if r != "training_domain_validation" or setup.val_fraction > 0]
    rows = []
    for rule in rules:
        for method in (m for m in FIG4_METHODS if m in by_method):
            picked = [select_step(r, rule) for r in by_method[method]]
            for variant in FIG4_VARIANTS:
                accuracy = mean_std(_percent(picked, f"fig4/{variant}/accuracy"))
                entropy = mean_std(
                    [float(p[f"fig4/{variant}/entropy"]) for p in picked if f"fig4/{variant}/entropy" in p]
                )
                rows.append(
                    {
                        "method": method,
                        "selection": rule,
                        "variant": variant,
                        "seeds_finished": len(picked),
                        "accuracy_mean": accuracy[0],
                        "accuracy_std": accuracy[1],
                        "paper_accuracy": FIG4_ACCURACY.get(METHODS[method].paper or "", {}).get(variant),
                        "entropy_mean": entropy[0],
                        "entropy_std": entropy[1],
                        "paper_entropy": FIG4_ENTROPY.get(METHODS[method].paper or "", {}).get(variant),
                    }
                )
    return rows


def precision_rows(setup: ColoredMNISTSetup, runs_root: Path, search: LambdaSearch) -> list[dict[str, Any]]:
    """float32 vs bfloat16 on the seeds finished in *both* precisions (rule (a)): the bfloat16 check. Empty when
    no method has runs in both."""
    other = replace(setup, precision="bfloat16" if setup.precision == "float32" else "float32")
    rows = []
    for method in setup.methods:
        rule = METHODS[method].lambda_rule
        if rule is not None and rule not in search.chosen:
            continue
        pairs = []
        for seed in setup.seeds:
            a = finished_rows(runs_root, method_config(setup, method, seed, search.chosen.get(rule)))
            b = finished_rows(runs_root, method_config(other, method, seed, search.chosen.get(rule)))
            if a and b:
                pairs.append((select_step(a, "last_step"), select_step(b, "last_step")))
        if not pairs:
            continue
        by_precision = {setup.precision: [p[0] for p in pairs], other.precision: [p[1] for p in pairs]}
        row: dict[str, Any] = {"method": method, "seeds": len(pairs)}
        for split in ("train", "test"):
            f32 = _percent(by_precision["float32"], f"{split}/accuracy")
            b16 = _percent(by_precision["bfloat16"], f"{split}/accuracy")
            (m32, s32), (m16, s16) = mean_std(f32), mean_std(b16)
            row.update({f"{split}_float32_mean": m32, f"{split}_float32_std": s32})
            row.update({f"{split}_bfloat16_mean": m16, f"{split}_bfloat16_std": s16})
            row[f"{split}_diff"] = m16 - m32
            row[f"{split}_diff_in_float32_std"] = (m16 - m32) / s32 if s32 > 0 else None
            row[f"{split}_max_seed_abs_diff"] = float(np.max(np.abs(np.subtract(b16, f32))))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------
def _pm(mean: float | None, std: float | None, digits: int = 1) -> str:
    return plus_minus(mean, std, digits)


def _seeds(row: Mapping[str, Any]) -> str:
    done, planned = row["seeds_finished"], row["seeds_planned"]
    return f"{done}/{planned}" + ("" if done == planned else " (fewer than planned)")


def table1_display(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Table 1 for a reader, one table per selection rule (keyed by the rule's label): ours beside the paper's, the
    difference in the paper's std (``Δ/σ``), the seeds that finished. The diagnostic fixed-step rows go with (a)."""
    sections = {}
    for rule in dict.fromkeys(row["selection"] for row in rows if not row["selection"].startswith("fixed")):
        lines = []
        for row in rows:
            if row["selection"] != rule and not (rule == "last_step" and row["selection"].startswith("fixed")):
                continue
            lines.append(
                {
                    "method": row["label"],
                    "seeds": _seeds(row),
                    "train acc. (ours)": _pm(row["train_mean"], row["train_std"]),
                    "train (paper)": _pm(row["paper_train_mean"], row["paper_train_std"]),
                    "Δ/σ train": sigma(row["train_diff_in_paper_std"]),
                    "test acc. (ours)": _pm(row["test_mean"], row["test_std"]),
                    "test (paper)": _pm(row["paper_test_mean"], row["paper_test_std"]),
                    "Δ/σ test": sigma(row["test_diff_in_paper_std"]),
                    "step": "" if row["step_mean"] is None else f"{row['step_mean']:.0f}",
                }
            )
        sections[RULE_LABELS.get(rule, rule)] = lines
    return sections


def format_table1(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of Table 1 (:func:`table1_display`), one section per selection rule."""
    return "\n".join(f"### {title}\n\n{markdown_table(lines)}\n" for title, lines in table1_display(rows).items())


def fig4_display(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Fig. 4's numbers for a reader, one table per selection rule: accuracy and entropy per variant, the paper's
    beside them."""
    sections = {}
    for rule in dict.fromkeys(row["selection"] for row in rows):
        lines = []
        for row in (r for r in rows if r["selection"] == rule):
            paper_acc, paper_ent = row["paper_accuracy"], row["paper_entropy"]
            lines.append(
                {
                    "method": METHODS[row["method"]].label.split(" (")[0],
                    "variant": row["variant"],
                    "seeds": str(row["seeds_finished"]),
                    "accuracy % (ours)": _pm(row["accuracy_mean"], row["accuracy_std"]),
                    "accuracy % (paper)": "" if paper_acc is None else f"{paper_acc:.1f}",
                    "entropy nats (ours)": _pm(row["entropy_mean"], row["entropy_std"], 2),
                    "entropy (paper)": "" if paper_ent is None else f"{paper_ent:.2f}",
                }
            )
        sections[RULE_LABELS.get(rule, rule)] = lines
    return sections


def format_fig4(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of Fig. 4's numbers (:func:`fig4_display`), one section per selection rule."""
    return "\n".join(f"### {title}\n\n{markdown_table(lines)}\n" for title, lines in fig4_display(rows).items())


def search_display(search: LambdaSearch) -> list[dict[str, str]]:
    """The plain Eq. 25 λ search for a reader: one line per λ, which λ each rule chose."""
    lines = []
    for row in search.rows:
        line = {"λ": f"{row['sd_lam']:g}", "seeds": f"{row['seeds_finished']}/{row['seeds_planned']}"}
        if "training_domain_validation:val_mean" in row:
            line["val acc. at best-val step"] = _pm(
                row["training_domain_validation:val_mean"], row["training_domain_validation:val_std"]
            )
            line["test acc. at best-val step"] = _pm(
                row["training_domain_validation:test_mean"], row["training_domain_validation:test_std"]
            )
        line["train acc. at last step"] = _pm(row["last_step:train_mean"], row["last_step:train_std"])
        line["test acc. at last step"] = _pm(row["last_step:test_mean"], row["last_step:test_std"])
        line["best test acc. (oracle)"] = _pm(row["test_domain_oracle:test_mean"], row["test_domain_oracle:test_std"])
        line["chosen"] = ", ".join(
            name
            for name, flag in (("by validation", row["chosen_by_validation"]), ("on test", row["chosen_by_test"]))
            if flag
        )
        lines.append(line)
    return lines


def format_search(search: LambdaSearch) -> str:
    return markdown_table(search_display(search)) + "\n"


def precision_display(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """float32 against bfloat16 on the seeds finished in both, for a reader."""
    return [
        {
            "method": METHODS[row["method"]].label.split(" (")[0],
            "seeds": row["seeds"],
            "train float32": _pm(row["train_float32_mean"], row["train_float32_std"]),
            "train bfloat16": _pm(row["train_bfloat16_mean"], row["train_bfloat16_std"]),
            "test float32": _pm(row["test_float32_mean"], row["test_float32_std"]),
            "test bfloat16": _pm(row["test_bfloat16_mean"], row["test_bfloat16_std"]),
            "test Δ / float32 std": sigma(row["test_diff_in_float32_std"]),
            "largest per-seed |Δ test|": f"{row['test_max_seed_abs_diff']:.2f}",
        }
        for row in rows
    ]


def format_precision(rows: Sequence[Mapping[str, Any]]) -> str:
    return markdown_table(precision_display(rows)) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------------------------
_COLORS = {"erm": "#C82506", "sd": "#0365C0", "sd_eq25": "#7FB2E5", "irm": "#2D7F58"}


_VARIANT_LABELS = {
    "gray-digit": "gray + digit",
    "color-digit": "colour + digit",
    "gray-blank": "gray + blank",
    "color-blank": "colour + blank",
}


def plot_fig4(rows: Sequence[Mapping[str, Any]], rule: str = "last_step") -> Figure:
    """Fig. 4 as bars: accuracy (top) and entropy (bottom) per test variant and method, mean ± std over seeds;
    the paper's values as black ticks."""
    chosen = [r for r in rows if r["selection"] == rule]
    methods = list(dict.fromkeys(r["method"] for r in chosen))
    figure = Figure(figsize=(9, 6), layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(methods))
    for ax, metric, scale in ((axes[0], "accuracy", 1.0), (axes[1], "entropy", 1.0)):
        for j, method in enumerate(methods):
            values = {r["variant"]: r for r in chosen if r["method"] == method}
            xs = np.arange(len(FIG4_VARIANTS)) + (j - (len(methods) - 1) / 2) * width
            means = [scale * (values[v][f"{metric}_mean"] if v in values else np.nan) for v in FIG4_VARIANTS]
            stds = [scale * (values[v][f"{metric}_std"] if v in values else np.nan) for v in FIG4_VARIANTS]
            seeds = max((values[v]["seeds_finished"] for v in values), default=0)
            label = f"{METHODS[method].label.split(' (')[0]} ({seeds} seeds)"
            ax.bar(xs, means, width * 0.95, yerr=stds, color=_COLORS.get(method, "gray"), label=label, capsize=2)
            for x, variant in zip(xs, FIG4_VARIANTS, strict=True):
                paper = values.get(variant, {}).get(f"paper_{metric}")
                if paper is not None:
                    ax.plot([x - width / 2, x + width / 2], [paper, paper], color="k", lw=2)
        ax.grid(axis="y", ls="--", lw=0.5, alpha=0.5)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].axhline(50, color="gray", lw=0.8, ls=":")
    axes[1].set_ylabel("mean predictive entropy (nats)")
    axes[1].axhline(math.log(2), color="gray", lw=0.8, ls=":")
    axes[1].set_xticks(np.arange(len(FIG4_VARIANTS)), [_VARIANT_LABELS[v] for v in FIG4_VARIANTS])
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title(
        f"Fig. 4, Colored MNIST test variants; black ticks: the paper's values; {RULE_LABELS[rule]}", fontsize=9
    )
    return figure

"""Writing a recipe's outputs: figures as PNG + PDF, tables as CSV + JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from gradstarve.experiments import tables


def save_figure(figure: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Save ``figure`` as ``out_dir/stem.png`` (150 dpi) and ``out_dir/stem.pdf``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    # No creation date in the PDF: a regenerated figure of the same runs is the same file.
    figure.savefig(paths[1], dpi=150, bbox_inches="tight", metadata={"CreationDate": None})
    return paths


def save_table(rows: Sequence[dict], out_dir: Path, stem: str) -> list[Path]:
    """Save a list of flat dicts as ``out_dir/stem.csv`` and ``out_dir/stem.json``; return both paths."""
    if not rows:
        raise ValueError(f"no rows to write for {stem!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return [csv_path, json_path]


def markdown_table(rows: Sequence[dict]) -> str:
    """A GitHub-flavoured markdown table of a list of flat dicts (columns: the keys of the first row), rendered by
    :func:`gradstarve.experiments.tables.markdown_table`."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    frame = pd.DataFrame([[row.get(column) for column in columns] for row in rows], columns=columns, dtype=object)
    return tables.markdown_table(frame).rstrip("\n")


def save_text(text: str, out_dir: Path, name: str) -> list[Path]:
    """Write ``text`` to ``out_dir/name`` (e.g. a markdown report); return the path in a list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(text)
    return [path]

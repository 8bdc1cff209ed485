"""`gradstarve ntk ...`: NTK feature spectra."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _print_files,
    _print_table,
    ntk_app,
)


@ntk_app.command("spectrum")
def ntk_spectrum(
    dataset: str = typer.Option("two-moons", help="two-moons or colored-mnist."),
    n: int = typer.Option(300, min=2, help="Number of training examples."),
    k: int = typer.Option(20, min=1, help="Number of features (top singular values of Y Φ₀)."),
    seed: int = typer.Option(0, help="Seed of the data and of the model's initialisation."),
    method: str = typer.Option("auto", help="auto, dense (Gram + eigsh) or matrix_free (Lanczos, bounded memory)."),
    data_root: Path = typer.Option(None, help="Data root for colored-mnist (default: $GRADSTARVE_DATA or cache)."),
    out: Path = typer.Option(Path("outputs/ntk"), "--out", help="Folder for spectrum-<dataset>.{png,pdf,csv,json}."),
) -> None:
    """Feature spectrum (Def. 1) of the paper's model for a data set, at initialisation.

    Prints the strengths s_j of the top-k features of Y Φ₀, their share of trace K and their label alignment
    (Σ_i U_ij / √n), and draws the spectrum.
    """
    from gradstarve.experiments.spectrum import write_spectrum

    start = time.perf_counter()
    try:
        result = write_spectrum(out, dataset=dataset, n=n, k=min(k, n), seed=seed, data_root=data_root, method=method)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    table = Table(title=f"NTK features at initialisation: {dataset}, n = {result.n}")
    for column in ("feature", "strength s", "share of trace K", "label alignment"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            str(row["feature"]), f"{row['strength']:.5g}", f"{row['trace_share']:.3%}", f"{row['label_alignment']:+.3f}"
        )
    _print_table(table)
    _print_files(result.files, time.perf_counter() - start)

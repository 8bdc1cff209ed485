"""`gradstarve theory ...`: the paper's theory (Fig. 6, Thm. 2, fixed points)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _SHORT_PENALTY,
    _fmt,
    _parse_floats,
    _print_files,
    _print_table,
    console,
    theory_app,
)


@theory_app.command("fig6")
def theory_fig6(
    out: Path = typer.Option(Path("outputs/theory"), "--out", help="Folder for fig6.{png,pdf,csv,json}."),
    s1: str = typer.Option("2,3,4,5,6", help="Strengths of feature 1, comma-separated (App. C: 2..6)."),
    s2: float = typer.Option(2.0, help="Strength of feature 2."),
    delta: float = typer.Option(0.6, help="Coupling δ of Eq. 23 (App. C: U = [[0.8, -0.6], [0.6, 0.8]])."),
    lam_wd: float = typer.Option(0.01, help="Weight decay λ (Eq. 9; sum over examples)."),
    lam_sd: float = typer.Option(0.002, help="Spectral decoupling λ (Eq. 25; sum over examples)."),
    steps: int = typer.Option(20000, min=1, help="Steps of primal descent and of dual ascent."),
    primal_lr: float = typer.Option(0.05, help="Learning rate of primal gradient descent (released code: 0.05)."),
) -> None:
    """Fig. 6: primal vs dual dynamics of two coupled features, with weight decay and with Spectral Decoupling.

    Simulates primal gradient descent, dual gradient ascent and the dual ODE (Eq. 17 / 27) for each s1, prints
    the final responses z of every path beside the exact fixed point and the paper's closed form / Lemma 1, and
    draws the figure. Defaults are App. C's set-up with the regularisation of the paper's released code.
    """
    from gradstarve.experiments.reproduce.fig6 import Fig6Setup, write_fig6

    start = time.perf_counter()
    setup = Fig6Setup(tuple(_parse_floats(s1, "--s1")), s2, delta, lam_wd, lam_sd, steps, primal_lr)
    try:
        result = write_fig6(out, setup)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    table = Table(title="Fig. 6: final responses z of each path against the exact fixed point z*")
    for column in ("penalty", "s1", "path", "z1", "z2", "max |z - z*|"):
        table.add_column(column, justify="left" if column in ("penalty", "path") else "right")
    previous = None
    for row in result.rows:
        key = (row["penalty"], row["s1"])
        if key != previous:
            if previous is not None:
                table.add_section()
            table.add_row(
                _SHORT_PENALTY[row["penalty"]],
                f"{row['s1']:g}",
                "exact fixed point",
                _fmt(row["z1_exact"]),
                _fmt(row["z2_exact"]),
                "",
            )
            previous = key
        table.add_row("", "", row["method"], _fmt(row["z1"]), _fmt(row["z2"]), f"{row['max_abs_diff']:.2e}")
    _print_table(table)
    _print_files(result.files, time.perf_counter() - start)


@theory_app.command("starvation")
def theory_starvation(
    out: Path = typer.Option(Path("outputs/theory"), "--out", help="Folder for starvation.{png,pdf,csv,json}."),
    delta: float = typer.Option(0.6, help="Coupling δ of Eq. 23."),
    s2: float = typer.Option(2.0, help="Strength of feature 2."),
    lam: float = typer.Option(0.01, help="λ for both penalties (sum over examples)."),
    s1_max: float = typer.Option(10.0, help="Largest strength of feature 1; the grid starts at s2."),
    points: int = typer.Option(33, min=2, help="Grid points."),
) -> None:
    """Thm. 2: z2* falls as feature 1 gets stronger under weight decay, and stays flat under Spectral Decoupling.

    Prints z1*, z2* and dz2*/ds1² (implicit-function theorem) for both penalties, and the perturbative z̃2* of
    Lemma 1; draws the curves.
    """
    from gradstarve.experiments.reproduce.starvation import StarvationSetup, write_starvation

    start = time.perf_counter()
    try:
        result = write_starvation(out, StarvationSetup(delta, s2, lam, s1_max, points))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    table = Table(title=f"Thm. 2 (δ = {delta:g}, s2 = {s2:g}, λ = {lam:g}); WD = weight decay, SD = spectral dec.")
    for column in (
        "s1",
        "z1* WD",
        "z2* WD",
        "dz2*/ds1² WD",
        "z̃2* Lemma 1",
        "z1* SD",
        "z2* SD",
        "dz2/ds1² SD",
    ):
        table.add_column(column, justify="right")
    stride = max(1, len(result.rows) // 12)
    for row in result.rows[::stride]:
        table.add_row(
            f"{row['s1']:.3g}",
            f"{row['z1_wd']:.4f}",
            f"{row['z2_wd']:.4f}",
            f"{row['dz2_ds1sq_wd']:.2e}",
            f"{row['z2_wd_lemma1']:.4f}",
            f"{row['z1_sd']:.4f}",
            f"{row['z2_sd']:.4f}",
            f"{row['dz2_ds1sq_sd']:.0e}",
        )
    _print_table(table)
    wd = result.curves["weight_decay"]
    strictly = wd.dz2_ds1sq[wd.s1 > s2]
    verdict = "[green]holds[/green]" if np.all(strictly < 0) else "[red]fails[/red] at some grid points"
    console.print(f"dz2*/ds1² < 0 for every s1 > s2 under weight decay (Eq. 24): {verdict}")
    _print_files(result.files, time.perf_counter() - start)


@theory_app.command("fixed-point")
def theory_fixed_point(
    s: str = typer.Option("3,2", help="Feature strengths, comma-separated."),
    lam: float = typer.Option(0.1, help="λ (sum over examples)."),
    delta: float = typer.Option(
        None, help="Couple two features by Eq. 23 with this δ (needs exactly two strengths); default U = I."
    ),
    penalty: str = typer.Option("weight_decay", help="weight_decay (Eq. 17) or spectral_decoupling (Eq. 27)."),
) -> None:
    """Fixed point of the dual flow: exact (Eq. 17 / 27), approximate (Eq. 19), closed form or Lemma 1, Thm. 1."""
    from gradstarve import theory

    strengths = _parse_floats(s, "--s")
    try:
        if delta is None:
            U = np.eye(len(strengths))
        elif len(strengths) != 2:
            raise ValueError(f"--delta couples exactly two features (Eq. 23); got {len(strengths)} strengths")
        else:
            U = theory.coupled_pair(delta)
        exact = theory.fixed_point(U, strengths, lam, penalty)
        approx = theory.fixed_point(U, strengths, lam, penalty, approx=True)
        rows = [("exact (Eq. 17/27)", exact), ("approx. flow (Eq. 19)", approx)]
        if delta is None or penalty == "spectral_decoupling":
            rows.append(
                (
                    "closed form (Eq. 20/21)",
                    theory.closed_form_fixed_point(strengths, lam, penalty, U=None if delta is None else U),
                )
            )
        else:
            rows.append(("Lemma 1 (Eq. 22)", theory.perturbative_fixed_point(U, strengths, lam)))
        attractive = theory.is_attractive(U, strengths, lam, penalty)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    table = Table(title=f"fixed point, penalty={penalty}, λ={lam:g}, s={strengths}")
    table.add_column("method")
    table.add_column("α*")
    table.add_column("z*")
    table.add_column("residual", justify="right")
    for name, point in rows:
        residual = "" if np.isnan(point.residual) else f"{point.residual:.1e}"
        table.add_row(name, np.array2string(point.alpha, precision=6), np.array2string(point.z, precision=6), residual)
    _print_table(table)
    console.print(f"Thm. 1, every Jacobian eigenvalue negative (attractive): {attractive}")

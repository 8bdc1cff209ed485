"""The ``gradstarve`` command line: argument parsing and printing only; the work lives in the library."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from gradstarve import __version__

console = Console()

app = typer.Typer(
    name="gradstarve",
    help=(
        "Gradient Starvation (Pezeshki et al., NeurIPS 2021) as software: the dual-space theory, NTK feature "
        "analysis, Spectral Decoupling and reproductions of the paper's figures and tables."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
theory_app = typer.Typer(
    help=(
        "The paper's theory (Sections 3.3-3.5, App. B-C): dual dynamics, fixed points, Thm. 1-2, Fig. 6. "
        "Fast, exact, numpy/scipy only."
    ),
    no_args_is_help=True,
)
app.add_typer(theory_app, name="theory")
ntk_app = typer.Typer(
    help="NTK feature analysis (Def. 1, Eq. 8): empirical NTK, feature spectrum, responses of a model.",
    no_args_is_help=True,
)
app.add_typer(ntk_app, name="ntk")
reproduce_app = typer.Typer(
    help=(
        "Reproduce the paper's figures and tables, with the paper's numbers beside ours. Without a sub-command: "
        "every reproduction into one report (report.md + self-contained report.html)."
    ),
)
app.add_typer(reproduce_app, name="reproduce")
sweep_app = typer.Typer(
    help=(
        "Sweeps: datasets x algorithms x seeds x hyperparameter draws, resumable, on a local process pool or Ray; "
        "model selection and mean ± std tables beside the paper's numbers."
    ),
    no_args_is_help=True,
)
app.add_typer(sweep_app, name="sweep")


data_app = typer.Typer(
    help=(
        "Data files: fetch, verify and prepare (decode and cache) them. The data root is --data-root, else "
        "$GRADSTARVE_DATA, else "
        "$XDG_CACHE_HOME/gradstarve (~/.cache/gradstarve); nothing is ever downloaded implicitly."
    ),
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"gradstarve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Gradient Starvation as software."""


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected comma-separated numbers, e.g. 2,3,4; got {text!r}"
        raise typer.BadParameter(message, param_hint=option) from None
    if not values:
        raise typer.BadParameter("expected at least one number", param_hint=option)
    return values


_SHORT_PENALTY = {"weight_decay": "WD (Eq. 9)", "spectral_decoupling": "SD (Eq. 25)"}


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _print_files(files: list[Path], seconds: float) -> None:
    console.print(f"[green]wrote[/green] {', '.join(str(path) for path in files)}  ({seconds:.1f} s)")


@contextlib.contextmanager
def _run_progress(total: int | None = None) -> Iterator[Callable]:
    """One progress display for every stream of sweep events (:class:`gradstarve.experiments.execute.RunEvent`):
    a bar of finished runs (``total`` if known) and one bar per run in training; failures are printed as they come.
    Yields the ``on_event`` handler."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        overall = bar.add_task("[bold]runs", total=total)
        active: dict[str, int] = {}

        def on_event(event) -> None:
            if event.kind == "started" and event.folder_name not in active:
                active[event.folder_name] = bar.add_task(f"  {event.folder_name}", total=None)
            elif event.kind == "progress" and event.folder_name in active:
                bar.update(active[event.folder_name], completed=event.step, total=event.total)
            elif event.kind == "finished":
                if event.folder_name in active:
                    bar.remove_task(active.pop(event.folder_name))
                bar.advance(overall)
                outcome = event.outcome
                if outcome is not None and outcome.state in ("failed", "busy"):
                    bar.console.print(f"[red]{outcome.state}[/red] {outcome.folder_name}: {outcome.error}")

        yield on_event


def _print_table(table: Table) -> None:
    """Print a rich table: on a terminal wrapped to its width (cells fold, never cut with "…"); to a file or a
    pipe as plain ASCII at full width, so that nothing is lost and the text can be read or grepped."""
    if console.is_terminal:
        for column in table.columns:
            if not column.no_wrap:
                column.overflow = "fold"
        console.print(table)
        return
    table.box = box.ASCII
    Console(file=console.file, width=100_000, no_color=True, highlight=False).print(table)


def _print_frame(
    frame,
    title: str,
    text_columns: tuple[str, ...] = ("method", "selection"),
    no_wrap: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> None:
    """A table of display strings (e.g. :attr:`Reproduction.tables`) as a rich table: ``text_columns`` left-aligned,
    the others right-aligned, ``no_wrap`` columns never wrapped, ``headers`` renaming columns for the screen."""
    table = Table(title=title)
    for column in frame.columns:
        header = (headers or {}).get(column, str(column))
        justify = "left" if column in text_columns else "right"
        table.add_column(header, justify=justify, no_wrap=column in no_wrap)
    for row in frame.itertuples(index=False):
        table.add_row(*(str(value) for value in row))
    _print_table(table)


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


class DataSet(str, Enum):
    mnist = "mnist"


_DATA_ROOT_HELP = "Data root (default: $GRADSTARVE_DATA, else $XDG_CACHE_HOME/gradstarve or ~/.cache/gradstarve)."


@data_app.command("download")
def data_download(
    dataset: DataSet = typer.Argument(..., help="The data set to fetch."),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    mirror: list[str] = typer.Option(
        None, "--mirror", help="Folder URL to fetch from, instead of the default mirrors; repeat to try several."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is present."),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for a mirror before trying the next."),
) -> None:
    """Fetch a data set's original files into <data root>/<dataset>/, verifying each file's MD5.

    MNIST: the four IDX .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/, else
    http://yann.lecun.com/exdb/mnist/. A file is moved into place only once its checksum matches.
    """
    from gradstarve.data import mnist
    from gradstarve.data.errors import DataError
    from gradstarve.data.paths import dataset_dir

    console.print(f"data folder: {dataset_dir(dataset.value, data_root)}")
    try:
        fetched = mnist.download_mnist(data_root, mirror or mnist.MNIST_MIRRORS, force=force, timeout=timeout)
    except DataError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    for item in fetched:
        state = "downloaded and verified" if item.downloaded else "already present, verified"
        console.print(f"[green]ok[/green] {item.path.name}: {state}")


@data_app.command("verify")
def data_verify(
    dataset: DataSet = typer.Argument(..., help="The data set to check."),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
) -> None:
    """Check that every file of a data set is present and intact (checksums, headers); exit 1 if not."""
    from gradstarve.data import mnist
    from gradstarve.data.paths import dataset_dir, download_command

    checks = mnist.check_mnist(data_root)
    folder = dataset_dir(dataset.value, data_root)
    table = Table(title=f"{dataset.value} in {folder}")
    for column in ("file", "status", "as", "expected MD5 of the .gz"):
        table.add_column(column, no_wrap=True)
    colours = {"ok": "green", "missing": "yellow", "corrupt": "red"}
    formats = {".gz": "gz", ".npz": "npz"}
    for check in checks:
        form = formats.get(check.path.suffix, "raw") if check.path else ""
        table.add_row(check.entry.name, f"[{colours[check.status]}]{check.status}[/]", form, check.entry.gz_md5)
    _print_table(table)
    for check in checks:
        if check.status == "corrupt":
            console.print(f"[red]corrupt:[/red] {check.message}", soft_wrap=True)
    if any(check.status == "missing" for check in checks):
        console.print(f"[yellow]missing:[/yellow] each file is read as <file>.gz, else <file>, else {mnist.NPZ_NAME}")
    if any(check.status != "ok" for check in checks):
        console.print(f"fix: {download_command(dataset.value, data_root)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]all files verified[/green]")


@reproduce_app.command("two-moons")
def reproduce_two_moons(
    quick: bool = typer.Option(False, "--quick", help="3 seeds and a tenth of the steps: under a minute."),
    out: Path = typer.Option(Path("outputs/two-moons"), "--out", help="Folder for fig2, fig3 and the table."),
    seeds: int = typer.Option(None, min=1, help="Number of seeds (default 10, or 3 with --quick)."),
    figure: str = typer.Option("2,3", help="Which figures: 2, 3 or 2,3."),
) -> None:
    """Fig. 2-3: two-moons decision boundaries, feature responses z(t) and input-space margins.

    Trains the paper's 2-500-1 ReLU network (App. A.1) for every seed at once, for Fig. 2's three runs
    (Δ < 0, Δ > 0, Δ > 0 with Spectral Decoupling) and Fig. 3's ten set-ups, and prints the margin, accuracy and
    final |z| per setting (mean ± std over seeds).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from gradstarve.experiments.compare import plus_minus
    from gradstarve.experiments.reproduce.two_moons import MoonsReproduction, write_two_moons

    figures = tuple(int(f) for f in _parse_floats(figure, "--figure"))
    config = MoonsReproduction(figures=figures, quick=quick)
    if seeds is not None:
        config = MoonsReproduction(seeds=tuple(range(seeds)), figures=figures, quick=quick)
    start = time.perf_counter()
    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            if done % 50 == 0 or done == total:
                bar.update(tasks[name], completed=done)

        try:
            report = write_two_moons(out, config, progress)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    features = report.config.features
    table = Table(title=f"two moons: mean ± std over {len(report.config.seeds)} seeds")
    for column in (
        "fig",
        "setting",
        "margin (mean dist.)",
        "margin (min dist.)",
        "train acc.",
        f"|z{features[0]}|",
        f"|z{features[1]}|",
        "s",
    ):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in report.rows:
        table.add_row(
            str(row["figure"]),
            row["label"],
            plus_minus(row["margin_mean_mean"], row["margin_mean_std"], 3),
            plus_minus(row["margin_min_mean"], row["margin_min_std"], 3),
            f"{row['train_accuracy_mean']:.3f}",
            plus_minus(row[f"abs_z{features[0]}_mean"], row[f"abs_z{features[0]}_std"], 2),
            plus_minus(row[f"abs_z{features[1]}_mean"], row[f"abs_z{features[1]}_std"], 2),
            f"{row['seconds']:.0f}",
        )
    _print_table(table)
    alignment = ", ".join(f"{j}: {report.rows[0][f'label_alignment_{j}']:+.2f}" for j in range(1, max(features) + 1))
    console.print(f"label alignment Σ_i U_ij/√n of the tracked features (first run): {alignment}")
    _print_files(report.files, time.perf_counter() - start)


@reproduce_app.command("celeba")
def reproduce_celeba(
    data_root: Path = typer.Option(
        None, "--data-root", help="The CelebA folder, or a data root holding celeba/ (e.g. ../shared/data)."
    ),
    preset: str = typer.Option("cpu", help="cpu (ResNet-18/2, 64 px, from scratch) or paper (ResNet-50, 224 px: GPU)."),
    quick: bool = typer.Option(
        False, "--quick", help="Smoke test: 1 seed, 2,000 training images, 2 epochs, 32 px on the cpu preset."
    ),
    seeds: int = typer.Option(None, min=1, help="Final seeds per method, 0..N-1 (default 5; 1 with --quick)."),
    methods: str = typer.Option(
        "erm,sd,sd_eq25,sd_margin,group_dro,lff,jtt",
        help="Comma-separated: erm, sd (Eq. 28), sd_eq25 (plain Eq. 25), sd_margin (Eq. 28, γ on the margin), "
        "group_dro, lff, jtt.",
    ),
    n_search: int = typer.Option(
        None, "--n-search", min=0, help="Random settings per method besides the default (default 8; 0 with --quick)."
    ),
    resolution: int = typer.Option(None, min=8, help="Image side in pixels (default: the preset's)."),
    epochs: int = typer.Option(
        None, min=1, help="Training epochs of every method; JTT's include its T first-stage epochs (default: preset's)."
    ),
    workers: int = typer.Option(0, min=0, help="Runs at a time (0: one by one in this process)."),
    out: Path = typer.Option(Path("outputs/celeba"), "--out", help="Folder for table2.md, the CSVs and the figure."),
    runs: Path = typer.Option(None, "--runs", help="Folder of the run folders, resumable (default: OUT/runs)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    pretrained: Path = typer.Option(
        None, "--pretrained", help="A local torchvision ImageNet checkpoint for the paper preset (nothing downloads)."
    ),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Image cache (default: $XDG_CACHE_HOME/gradstarve/image-cache)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch per run (default: torch's choice, or CPUs / workers)."
    ),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        help="Train nothing: build the tables from the finished runs in --runs (the others are named, not counted).",
    ),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Log each run's evaluation scalars to <run>/tensorboard (gradstarve[tensorboard])."
    ),
) -> None:
    """Table 2: CelebA worst-group and average test accuracy of ERM, SD (Eq. 28 and Eq. 25), Group DRO, LfF, JTT.

    Two sweeps (gradstarve.experiments.sweep) share one folder of resumable runs: a seeded random search of each
    method on one seed, chosen by validation worst-group accuracy (search.md), then every method at its chosen
    setting on the final seeds (table2.md). Interrupt and rerun the same command to continue. Within a run the
    evaluation is selected by the best validation worst-group accuracy and by the best validation average accuracy
    (the paper's rule); the paper's numbers are printed beside ours, and the notes give SD minus ERM, paired by
    seed, with its 95 % interval.
    """
    import torch

    from gradstarve.experiments.reproduce.base import DataMissingError
    from gradstarve.experiments.reproduce.celeba import CelebASetup, write_celeba

    if threads is not None and workers == 0:
        torch.set_num_threads(threads)
    per_method = {}
    if epochs is not None:
        from gradstarve.experiments.reproduce.celeba import METHODS

        per_method = {m: {"epochs": epochs} for m in METHODS}  # JTT: T of them identify, the rest train

    try:
        setup = CelebASetup(
            preset=preset,
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            seeds=tuple(range(seeds)) if seeds is not None else None,
            quick=quick,
            pretrained_weights=str(pretrained) if pretrained is not None else None,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            n_search=n_search,
            resolution=resolution,
            hparams=per_method,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if device not in ("cpu", "cuda", "auto"):
        raise typer.BadParameter(f"expected cpu, cuda or auto, got {device!r}", param_hint="--device")
    resolved = setup.resolved()
    console.print(
        f"CelebA Table 2: preset {setup.preset}, methods {', '.join(setup.methods)}, seeds {list(resolved.seeds)}"
        f"{' (quick)' if quick else ''}; runs in {runs or out / 'runs'}"
    )
    try:
        reproduction = write_celeba(
            out,
            setup,
            runs_dir=runs,
            data_root=data_root,
            device=device,
            progress=True,
            report=lambda line: console.print(f"  {line}", soft_wrap=True),
            report_only=report_only,
            workers=workers,
            threads_per_run=threads if workers else None,
            tensorboard=tensorboard,
        )
    except (DataMissingError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    shown = reproduction.tables["Table 2 (ours beside the paper)"]
    _print_frame(shown, reproduction.title + " (%; Δ in paper std units)")
    for note in reproduction.notes:
        console.print(f"- {note}", soft_wrap=True)
    _print_files([path for path in reproduction.files if path.suffix in (".md", ".png", ".csv")], reproduction.seconds)


@reproduce_app.command("colored-mnist")
def reproduce_colored_mnist(
    seeds: int = typer.Option(None, min=1, help="Number of seeds, 0..N-1 (default 10, or 2 with --quick)."),
    quick: bool = typer.Option(
        False, "--quick", help="A few minutes on 2 cores: fewer images and steps (qualitative only)."
    ),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    out: Path = typer.Option(Path("outputs/colored-mnist"), "--out", help="Folder for the tables and figures."),
    runs: Path = typer.Option(None, "--runs", help="Run folders (default OUT/runs); finished runs are skipped."),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    precision: str = typer.Option("float32", help="float32 or bfloat16 (autocast)."),
    methods: str = typer.Option(
        None, help="Comma-separated subset of erm, sd, sd_eq25, sd_eq25_test, irm, vrex, oracle (default: all)."
    ),
    val_fraction: float = typer.Option(0.1, help="Held-out fraction of each training environment (rule (b))."),
    sd_lambda: float = typer.Option(None, help="λ of the plain Eq. 25 rows (default: chosen by a search)."),
    eval_every: int = typer.Option(None, min=1, help="Evaluation interval in steps (default 50; quick 15)."),
    workers: int = typer.Option(
        0, min=0, help="Runs at a time (0: one by one in this process). Several launches may also share --runs."
    ),
    report_only: bool = typer.Option(False, "--report-only", help="Train nothing; tables from finished runs."),
    threads: int = typer.Option(
        None,
        min=1,
        help="CPU threads for torch per run (default: torch's, or CPUs / workers; 1 with --quick, whose small "
        "matrices gain nothing).",
    ),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Log each run's evaluation scalars to <run>/tensorboard (gradstarve[tensorboard])."
    ),
) -> None:
    """Table 1 and Fig. 4: Colored MNIST with ERM, SD (released schedule and plain Eq. 25), IRM, V-REx, oracle.

    Every (method, seed) is one resumable run folder; the tables hold whatever has finished, with the paper's
    numbers beside ours, and say how many seeds each row holds. The full table is ~110,000 full-batch steps: hours
    on a CPU (10 % faster with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 in
    the environment, which keeps freed pages instead of faulting fresh ones every step), minutes on a GPU
    (scripts/gpu_colored_mnist.sh). --quick is a few-minute smoke test (see its notes for what it can show).
    """
    from gradstarve.experiments.reproduce.base import DataMissingError
    from gradstarve.experiments.reproduce.colored_mnist import ColoredMNISTSetup
    from gradstarve.experiments.reproduce.colored_mnist import reproduce_colored_mnist as run_recipe

    changes: dict = {"precision": precision, "val_fraction": val_fraction, "sd_lambda": sd_lambda}
    if seeds is not None:
        changes["seeds"] = tuple(range(seeds))
    if methods is not None:
        changes["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    if eval_every is not None:
        changes["eval_every"] = eval_every
    try:
        setup = ColoredMNISTSetup.quick_setup(**changes) if quick else ColoredMNISTSetup(**changes)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if (threads is not None or quick) and workers == 0:
        import torch

        torch.set_num_threads(threads or 1)
    with _run_progress() as on_event:
        try:
            result = run_recipe(
                setup,
                out,
                runs_root=runs,
                data_root=data_root,
                device=device,
                on_event=on_event,
                workers=workers,
                threads_per_run=(threads or (1 if quick else None)) if workers else None,
                train_runs=not report_only,
                tensorboard=tensorboard,
            )
        except DataMissingError as error:
            console.print(f"[red]error:[/red] {error}", soft_wrap=True)
            raise typer.Exit(1) from None
    for title, frame in result.tables.items():
        if title.startswith("Table 1"):
            _print_frame(frame, f"Colored MNIST {title}: accuracy %, ours beside the paper")
    for note in result.notes:
        console.print(f"- {note}", soft_wrap=True)
    _print_files(result.files, result.seconds)


_PREPARABLE = ("celeba",)


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(..., help=f"Data set to prepare: {', '.join(_PREPARABLE)}."),
    data_root: Path = typer.Option(
        ..., "--data-root", help="The CelebA folder, or a data root holding it as celeba/ (e.g. ../shared/data)."
    ),
    resolution: int = typer.Option(64, min=8, help="Side of the square images (CPU preset 64, paper 224)."),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Cache folder [default: $XDG_CACHE_HOME/gradstarve/image-cache]."
    ),
    layout: str = typer.Option("auto", help="auto, metadata (metadata.csv) or official (list_attr/list_eval files)."),
    target: str = typer.Option("Blond_Hair", help="Target attribute."),
    attribute: str = typer.Option("Male", help="Spurious attribute."),
    workers: int = typer.Option(None, min=0, help="Decoding threads [default: all cores]."),
) -> None:
    """Decode a data set's images once into the cache and print the group counts per split.

    Later loads (training runs, reproductions) then read the cached pixels in seconds.
    """
    if dataset not in _PREPARABLE:
        raise typer.BadParameter(f"expected one of {', '.join(_PREPARABLE)}, got {dataset!r}", param_hint="DATASET")
    import torch

    from gradstarve.data.celeba import load_celeba

    start = time.perf_counter()
    try:
        splits = load_celeba(
            data_root,
            resolution=resolution,
            target=target,
            attribute=attribute,
            cache_dir=cache_dir,
            layout=layout,
            workers=workers,
            dtype=torch.uint8,  # counts and cache only: skip the float copy
        )
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    first = next(iter(splits.values()))
    table = Table(
        title=f"CelebA groups ({target} x {attribute}) at {resolution}x{resolution}, {first.metadata['layout']} layout"
    )
    table.add_column("split")
    for name in first.group_names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    table.add_column("cache")
    for split, data in splits.items():
        counts = data.metadata["group_counts"]
        status = "reused" if data.metadata["from_cache"] else "built"
        table.add_row(split, *(f"{counts[name]:,}" for name in data.group_names), f"{len(data):,}", status)
    _print_table(table)
    skipped = first.metadata["n_skipped_missing_images"]
    if skipped:
        console.print(f"{skipped:,} of {first.metadata['n_listed_images']:,} listed images are not on disk: skipped")
    console.print(f"cache files: {', '.join(data.metadata['cache_file'] for data in splits.values())}")
    console.print(f"done in {time.perf_counter() - start:.1f} s")


@app.command("analyse")
def analyse_command(
    run_dir: Path = typer.Argument(..., help="A run folder with its checkpoint (e.g. from sweep launch or reproduce)."),
    split: str = typer.Option("test", help="The task's split to analyse (train, val, test, ...)."),
    n: int = typer.Option(1000, min=2, help="Examples (a seeded random subset of the split)."),
    k: int = typer.Option(10, min=1, help="Features (Def. 1) to report."),
    out: Path = typer.Option(
        None, "--out", help="Folder for starvation.md and starvation.png [default: RUN/analysis]."
    ),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
) -> None:
    """Which NTK features a trained run uses and which it starves: features of its network at initialisation,
    responses of the trained one, per group, with a plain verdict (starvation_report)."""
    from gradstarve.experiments.analyse import analyse_run

    result = analyse_run(run_dir, split=split, n=n, k=k, data_root=data_root, out_dir=out)
    import pandas as pd

    columns = ["feature", "strength_share", "response_share", "starved", "alignment_label"]
    shown = pd.DataFrame(
        {c: [f"{v:.3f}" if isinstance(v, float) else str(v) for v in result.table[c]] for c in columns}
    )
    _print_frame(shown, f"starvation diagnosis of {run_dir.name}", text_columns=("feature",))
    for sentence in result.table.attrs["verdict"]:
        console.print(f"- {sentence}", soft_wrap=True)
    console.print(f"[green]wrote[/green] {', '.join(str(p) for p in result.files)}", soft_wrap=True)


@app.command("hparams")
def hparams_command(
    algorithm: str = typer.Argument(..., help="Algorithm: erm, sd, irm, vrex, group_dro, lff or jtt."),
    dataset: str = typer.Argument(
        ...,
        help="Dataset: two-moons, colored-mnist, celeba, synthetic, or a task registered in a module named by "
        "$GRADSTARVE_TASK_MODULES.",
    ),
    seed: int = typer.Option(None, "--seed", min=0, help="Also show the random-search draw with this seed."),
    as_json: bool = typer.Option(False, "--json", help="Print only the values (the draw if --seed) as JSON."),
) -> None:
    """Default hyperparameters of ALGORITHM on DATASET, their random-search distributions and sources."""
    import json

    from gradstarve import hparams
    from gradstarve.experiments.tasks import task_names

    task_names()  # imports $GRADSTARVE_TASK_MODULES, whose tasks bring their hyperparameter rows

    try:
        specs = hparams.hparam_specs(algorithm, dataset)
        draw = None if seed is None else hparams.random_hparams(algorithm, dataset, seed)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if as_json:
        values = draw if draw is not None else hparams.default_hparams(algorithm, dataset)
        console.print_json(json.dumps(values))
        return
    table = Table(title=f"hyperparameters of {algorithm} on {dataset}", show_lines=False)
    columns = ["name", "default", *([f"seed {seed}"] if draw is not None else []), "search", "meaning", "source"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for name, spec in specs.items():
        sampled = [hparams.describe(draw[name])] if draw is not None else []
        table.add_row(name, hparams.describe(spec.default), *sampled, str(spec.search), spec.doc, spec.source)
    _print_table(table)


# --------------------------------------------------------------------------------------------------------------
# gradstarve sweep ...
# --------------------------------------------------------------------------------------------------------------
class Backend(str, Enum):
    local = "local"
    ray = "ray"


def _parse_names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter("expected comma-separated names", param_hint=option)
    return names


def _parse_seeds(text: str | None) -> list[int] | None:
    """``0,1,2`` or ranges ``0-9`` (inclusive), mixed."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                seeds += list(range(low, high + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise typer.BadParameter(f"expected seeds like 0,1,2 or 0-9, got {text!r}", param_hint="--seeds") from None
    if not seeds:
        raise typer.BadParameter("expected at least one seed", param_hint="--seeds")
    return seeds


def _parse_assignments(items: list[str] | None, option: str) -> dict:
    """``KEY=VALUE`` pairs; VALUE is read as JSON (numbers, true/false, null, lists), else kept as text."""
    import json

    values = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


def _sweep_error(error: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {error}", soft_wrap=True)
    return typer.Exit(1)


@sweep_app.command("launch")
def sweep_launch(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder (spec.json, runs/, results/)."),
    spec_file: Path = typer.Option(None, "--spec", help="Sweep spec, .json or .toml (SweepSpec's field names)."),
    datasets: str = typer.Option(None, help="Comma-separated: synthetic, two-moons, colored-mnist, celeba."),
    algorithms: str = typer.Option(None, help="Comma-separated: erm, sd, irm, vrex, group_dro, lff, jtt."),
    seeds: str = typer.Option(None, help="Trial seeds: 0,1,2 or 0-9 [default: 0]."),
    n_hparams: int = typer.Option(None, "--n-hparams", min=0, help="Random hyperparameter draws besides the defaults."),
    hparams_seed: int = typer.Option(None, "--hparams-seed", min=0, help="Seed of the draws [default: 0]."),
    steps: int = typer.Option(None, min=1, help="Training steps of every run [default: the hparams table's]."),
    eval_every: int = typer.Option(None, "--eval-every", min=1, help="Evaluate and checkpoint every N steps [100]."),
    set_: list[str] = typer.Option(None, "--set", help="Hyperparameter KEY=VALUE for every run that has it; repeat."),
    data: list[str] = typer.Option(None, "--data", help="Task option KEY=VALUE for every dataset; repeat."),
    backend: Backend = typer.Option(Backend.local, help="local (process pool) or ray (Ray Tune)."),
    workers: int = typer.Option(
        None, min=0, help="Runs at a time [default: CPU count]; 0: one by one in this process (debugging)."
    ),
    threads: int = typer.Option(None, min=1, help="Torch threads (Ray: CPUs) per run [default: CPUs / workers]."),
    address: str = typer.Option(None, help="Ray cluster address (e.g. auto); default: start a local Ray instance."),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="cpu, cuda or auto (cuda when available)."),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Log each run's evaluation scalars to <run>/tensorboard (gradstarve[tensorboard])."
    ),
) -> None:
    """Run every unfinished run of a sweep; finished runs are skipped, interrupted ones resume from their checkpoint.

    A new sweep needs --datasets and --algorithms (or --spec); relaunching an existing folder needs no option.
    Hyperparameter setting 0 is the table's defaults; settings 1..N are seeded random draws (gradstarve hparams).
    """

    from gradstarve.experiments import sweep

    spec = None
    given = {
        "seeds": _parse_seeds(seeds),
        "n_hparams": n_hparams,
        "hparams_seed": hparams_seed,
        "steps": steps,
        "eval_every": eval_every,
    }
    given = {key: value for key, value in given.items() if value is not None}
    overrides, options = _parse_assignments(set_, "--set"), _parse_assignments(data, "--data")
    names = {"datasets": _parse_names(datasets, "--datasets"), "algorithms": _parse_names(algorithms, "--algorithms")}
    try:
        if spec_file is not None:
            spec = sweep.load_spec(spec_file)
            if given or overrides or options or any(names.values()):
                raise ValueError("give either --spec or the spec options (--datasets, --seeds, ...), not both")
        elif any(names.values()) or given or overrides or options:
            if not all(names.values()):
                raise ValueError("a new sweep needs both --datasets and --algorithms")
            data_options = {name: dict(options) for name in names["datasets"]} if options else {}
            spec = sweep.SweepSpec(**names, **given, overrides=overrides, data=data_options)
        runs = sweep.plan(spec if spec is not None else sweep.open_spec(sweep_dir))
    except ValueError as error:
        raise _sweep_error(error) from None
    console.print(f"sweep {sweep_dir}: {len(runs)} runs, backend {backend.value}")
    with _run_progress(len(runs)) as on_event:
        try:
            summary = sweep.launch(
                sweep_dir,
                spec,
                backend=backend.value,
                workers=workers,
                threads_per_run=threads,
                address=address,
                data_root=data_root,
                device=device,
                on_event=on_event,
                tensorboard=tensorboard,
            )
        except ValueError as error:
            raise _sweep_error(error) from None
    console.print(
        f"done {summary.count('done')}, already done {summary.count('skipped')}, failed {summary.count('failed')}, "
        f"busy {summary.count('busy')} in {summary.seconds:.1f} s"
    )
    if summary.failed:
        console.print("errors are in each run's error.txt; relaunch to retry; gradstarve sweep status shows them")
        raise typer.Exit(1)


@sweep_app.command("status")
def sweep_status_command(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder."),
    runs: bool = typer.Option(False, "--runs", help="List every run, not only the counts."),
) -> None:
    """Done / running / failed / partial / not started, per (dataset, algorithm), and per run with --runs."""
    from gradstarve.experiments import sweep

    try:
        statuses = sweep.sweep_status(sweep_dir)
    except ValueError as error:
        raise _sweep_error(error) from None
    table = Table(title=f"sweep {sweep_dir}: {len(statuses)} runs")
    for column in ("dataset", "algorithm", *sweep.RUN_STATES, "total"):
        table.add_column(column, justify="left" if column in ("dataset", "algorithm") else "right")
    groups: dict[tuple[str, str], list] = {}
    for status in statuses:
        groups.setdefault((status.run.config.dataset, status.run.config.algorithm), []).append(status)
    for (dataset, algorithm), members in groups.items():
        counts = [sum(s.state == state for s in members) for state in sweep.RUN_STATES]
        table.add_row(dataset, algorithm, *(str(c) if c else "" for c in counts), str(len(members)))
    _print_table(table)
    if runs:
        listing = Table(title="runs")
        for column in ("run folder", "hparams", "state", "step", "error"):
            listing.add_column(column, overflow="fold")
        colours = {"done": "green", "running": "cyan", "failed": "red", "partial": "yellow"}
        for status in statuses:
            step = "" if status.step is None else f"{status.step}/{status.total if status.total is not None else '?'}"
            state = f"[{colours.get(status.state, 'white')}]{status.state}[/]"
            listing.add_row(status.run.folder_name, status.run.hparams_label, state, step, status.error or "")
        _print_table(listing)


@sweep_app.command("collect")
def sweep_collect(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder."),
    rule: list[str] = typer.Option(
        None,
        "--rule",
        help="Selection rule(s): last_step, training_domain_validation, worst_group_validation, average_validation, "
        "test_domain_oracle [default: all].",
    ),
    out: Path = typer.Option(None, "--out", help="Folder for the tables [default: SWEEP_DIR/results]."),
) -> None:
    """Model selection over the finished runs: mean ± std tables per (dataset, algorithm) and rule, beside the
    paper's numbers (Δ/σ: difference in the paper's standard deviations); writes markdown, CSV and LaTeX."""
    from gradstarve.experiments import sweep

    try:
        results = sweep.collect(sweep_dir, rules=rule or None, out_dir=out)
    except ValueError as error:
        raise _sweep_error(error) from None
    for title, frame in results.display_tables().items():
        headers = {
            column: str(column).replace("/worst_group_accuracy", " worst group").replace("/accuracy", "")
            for column in frame.columns
        }
        names = ("dataset", "algorithm", "hparams")
        _print_frame(frame, f"{title}; accuracy in %", text_columns=names, no_wrap=names[:2], headers=headers)
    for note in results.notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    console.print(f"[green]wrote[/green] {', '.join(str(path) for path in results.files)}", soft_wrap=True)


@sweep_app.command("delete-incomplete")
def sweep_delete_incomplete(
    sweep_dir: Path = typer.Argument(..., help="The sweep folder."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete every run folder without a done marker (their partial work is lost; runs in progress are kept)."""
    from gradstarve.experiments import sweep

    root = sweep.runs_root(sweep_dir)
    folders = sorted(root.iterdir()) if root.exists() else []
    candidates = [p for p in folders if p.is_dir() and not (p / "done").exists()]
    if not candidates:
        console.print("no incomplete runs")
        return
    if not yes and not typer.confirm(f"delete {len(candidates)} incomplete run folders in {root}?"):
        raise typer.Exit(1)
    deleted = sweep.delete_incomplete(sweep_dir)
    kept = len(candidates) - len(deleted)
    console.print(f"deleted {len(deleted)} incomplete runs" + (f"; kept {kept} being trained now" if kept else ""))


# --------------------------------------------------------------------------------------------------------------
# gradstarve reproduce (no sub-command): everything, into one report
# --------------------------------------------------------------------------------------------------------------
@reproduce_app.callback(invoke_without_command=True)
def reproduce_everything(
    ctx: typer.Context,
    quick: bool = typer.Option(
        False, "--quick", help="Fewer seeds and steps: under 10 minutes on 2 CPU cores (data sets skipped if absent)."
    ),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    out: Path = typer.Option(Path("outputs/reproduce"), "--out", help="Folder for every part and the report."),
    only: str = typer.Option(
        None, help="Comma-separated subset: fig6, starvation, legendre, two-moons, colored-mnist, celeba."
    ),
) -> None:
    """Without a sub-command: run every reproduction (theory Fig. 6, Thm. 2, Fig. 5 + Table 4, two moons, Colored MNIST
    Table 1 + Fig. 4, CelebA Table 2) and write OUT/report.md and a self-contained OUT/report.html.

    A part whose data is missing is skipped with a message saying how to get it; the others still run. Options
    given before a sub-command (e.g. gradstarve reproduce --quick two-moons) belong to this command and are ignored
    by the sub-command: write them after it.
    """
    if ctx.invoked_subcommand is not None:
        return
    import shlex
    import sys

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from gradstarve.experiments.reproduce.registry import RECIPE_NAMES, reproduce_all

    names = _parse_names(only, "--only")
    unknown = [name for name in names or [] if name not in RECIPE_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown parts {unknown}; known: {', '.join(RECIPE_NAMES)}", param_hint="--only")
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def on_event(kind, recipe, outcome) -> None:
            if kind == "started":
                tasks[recipe.name] = bar.add_task(f"{recipe.name}: {recipe.title}", total=None)
                return
            for name in [n for n in tasks if n == recipe.name or n.startswith(f"{recipe.name}/")]:
                bar.remove_task(tasks.pop(name))
            if outcome is None or hasattr(outcome, "tables"):
                bar.console.print(f"[green]done[/green] {recipe.name} ({outcome.seconds:.1f} s)")
            elif outcome.kind == "failed":
                bar.console.print(f"[red]failed[/red] {recipe.name}: {outcome.reason}", soft_wrap=True)
            else:
                bar.console.print(f"[yellow]skipped[/yellow] {recipe.name} ({outcome.kind}): {outcome.reason}")

        def progress(name: str, done: int, total: int) -> None:
            key = f"two-moons/{name}"
            if key not in tasks:
                tasks[key] = bar.add_task(f"  {name}", total=total)
            if done % 50 == 0 or done == total:
                bar.update(tasks[key], completed=done)

        result = reproduce_all(
            out,
            quick=quick,
            data_root=data_root,
            only=names,
            on_event=on_event,
            progress=progress,
            command=shlex.join(["gradstarve", *sys.argv[1:]]),
        )
    table = Table(title=f"reproduction report ({result.seconds:.0f} s)")
    for column in ("part", "reproduces", "status", "time"):
        table.add_column(column)
    for item in result.reproductions:
        table.add_row(item.name, item.title, item.evidence or "ran", f"{item.seconds:.1f} s")
    for item in result.skipped:
        colour = "red" if item.kind == "failed" else "yellow"
        table.add_row(item.name, item.title, f"[{colour}]{item.kind}[/]", f"{item.seconds:.1f} s")
    _print_table(table)
    console.print(f"[green]wrote[/green] {', '.join(str(path) for path in result.report)}", soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, ValueError | OSError | RuntimeError) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gradstarve`` console script.

    A failure prints one line on stderr, ``error: <what is wrong and the fix>``, and exits with status 1 (usage
    errors: click's message, status 2). ``--debug`` anywhere on the command line (or ``GRADSTARVE_DEBUG=1``) shows
    the full traceback instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("GRADSTARVE_DEBUG", "") not in ("", "0")
    args = [arg for arg in args if arg != "--debug"]
    try:
        app(args=args, prog_name="gradstarve")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept, unfinished ones resume on the next launch", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if debug:
            raise
        print(f"error: {_one_line(error)} (run again with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

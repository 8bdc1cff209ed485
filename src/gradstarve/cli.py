"""The ``gradstarve`` command line: argument parsing and printing only; the work lives in the library."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import numpy as np
import typer
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
    help="Reproduce the paper's figures and tables, with the paper's numbers beside ours.",
    no_args_is_help=True,
)
app.add_typer(reproduce_app, name="reproduce")


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
    console.print(table)
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
    console.print(table)
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
    console.print(table)
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
    console.print(table)
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
    console.print(table)
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
            f"{row['margin_mean_mean']:.3f} ± {row['margin_mean_std']:.3f}",
            f"{row['margin_min_mean']:.3f} ± {row['margin_min_std']:.3f}",
            f"{row['train_accuracy_mean']:.3f}",
            f"{row[f'abs_z{features[0]}_mean']:.2f} ± {row[f'abs_z{features[0]}_std']:.2f}",
            f"{row[f'abs_z{features[1]}_mean']:.2f} ± {row[f'abs_z{features[1]}_std']:.2f}",
            f"{row['seconds']:.0f}",
        )
    console.print(table)
    alignment = ", ".join(f"{j}: {report.rows[0][f'label_alignment_{j}']:+.2f}" for j in range(1, max(features) + 1))
    console.print(f"label alignment Σ_i U_ij/√n of the tracked features (first run): {alignment}")
    _print_files(report.files, time.perf_counter() - start)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected I/K, e.g. 0/4, got {text!r}", param_hint="--shard") from None
    if not 0 <= index < count:
        raise typer.BadParameter(f"expected 0 <= I < K, got {text!r}", param_hint="--shard")
    return index, count


@reproduce_app.command("colored-mnist")
def reproduce_colored_mnist(
    seeds: int = typer.Option(None, min=1, help="Number of seeds, 0..N-1 (default 10, or 2 with --quick)."),
    quick: bool = typer.Option(
        False, "--quick", help="A few minutes on 2 cores: fewer images and steps (qualitative only)."
    ),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    out: Path = typer.Option(Path("outputs/colored-mnist"), "--out", help="Folder for the tables and figures."),
    runs: Path = typer.Option(None, "--runs", help="Run folders (default OUT/runs); finished runs are skipped."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    precision: str = typer.Option("float32", help="float32 or bfloat16 (autocast)."),
    methods: str = typer.Option(
        None, help="Comma-separated subset of erm, sd, sd_eq25, sd_eq25_test, irm, vrex, oracle (default: all)."
    ),
    val_fraction: float = typer.Option(0.1, help="Held-out fraction of each training environment (rule (b))."),
    sd_lambda: float = typer.Option(None, help="λ of the plain Eq. 25 rows (default: chosen by a search)."),
    eval_every: int = typer.Option(None, min=1, help="Evaluation interval in steps (default 50; quick 15)."),
    shard: str = typer.Option(None, help="I/K: train only every K-th run from the I-th (parallel processes)."),
    report_only: bool = typer.Option(False, "--report-only", help="Train nothing; tables from finished runs."),
    threads: int = typer.Option(
        None, min=1, help="CPU threads for torch (default: torch's; 1 with --quick, whose small matrices gain nothing)."
    ),
) -> None:
    """Table 1 and Fig. 4: Colored MNIST with ERM, SD (released schedule and plain Eq. 25), IRM, V-REx, oracle.

    Every (method, seed) is one resumable run folder; the tables hold whatever has finished, with the paper's
    numbers beside ours, and say how many seeds each row holds. The full table is ~110,000 full-batch steps: hours
    on a CPU (10 % faster with GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 in
    the environment, which keeps freed pages instead of faulting fresh ones every step), minutes on a GPU
    (scripts/gpu_colored_mnist.sh). --quick is a few-minute smoke test (see its notes for what it can show).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gradstarve.experiments.reproduce.base import DataMissingError
    from gradstarve.experiments.reproduce.colored_mnist import ColoredMNISTSetup, RunProgress
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
    if threads is not None or quick:
        import torch

        torch.set_num_threads(threads or 1)
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        overall = bar.add_task("all runs (steps)", total=None)
        current = bar.add_task("", total=None)

        def progress(event: RunProgress) -> None:
            bar.update(overall, completed=event.done_steps, total=event.total_steps)
            description = f"run {event.run + 1}/{event.runs} {event.label}"
            bar.update(current, description=description, completed=event.step, total=event.steps)

        try:
            result = run_recipe(
                setup,
                out,
                runs_root=runs,
                data_root=data_root,
                device=device,
                progress=progress,
                shard=_parse_shard(shard),
                train_runs=not report_only,
            )
        except DataMissingError as error:
            console.print(f"[red]error:[/red] {error}", soft_wrap=True)
            raise typer.Exit(1) from None
    frame = result.tables["table1"]
    table = Table(title="Table 1, Colored MNIST: accuracy % (ours | paper, Δ in the paper's std)")
    for column in ("selection", "method", "seeds", "train", "paper", "Δ/σ", "test", "paper ", "Δ/σ "):
        table.add_column(column, justify="left" if column in ("selection", "method") else "right")

    def pm(mean: float, std: float) -> str:
        return "n/a" if mean != mean else f"{mean:.1f} ± {std:.1f}"

    def paper(mean: float | None, std: float | None) -> str:
        return "" if mean is None or mean != mean else f"{mean:.1f} ± {std:.1f}"

    def sigma(value: float | None) -> str:
        return "" if value is None or value != value else f"{value:+.1f}"

    for row in frame.to_dict("records"):
        table.add_row(
            row["selection"].replace("training_domain_validation", "validation"),
            row["label"],
            f"{row['seeds_finished']}/{row['seeds_planned']}",
            pm(row["train_mean"], row["train_std"]),
            paper(row["paper_train_mean"], row["paper_train_std"]),
            sigma(row["train_diff_in_paper_std"]),
            pm(row["test_mean"], row["test_std"]),
            paper(row["paper_test_mean"], row["paper_test_std"]),
            sigma(row["test_diff_in_paper_std"]),
        )
    console.print(table)
    for note in result.notes:
        console.print(f"- {note}", soft_wrap=True)
    if result.files:
        _print_files(result.files, result.seconds)
    else:
        console.print(f"shard {shard} done in {result.seconds:.0f} s (tables: run again without --shard)")


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
    console.print(table)
    skipped = first.metadata["n_skipped_missing_images"]
    if skipped:
        console.print(f"{skipped:,} of {first.metadata['n_listed_images']:,} listed images are not on disk: skipped")
    console.print(f"cache files: {', '.join(data.metadata['cache_file'] for data in splits.values())}")
    console.print(f"done in {time.perf_counter() - start:.1f} s")


@app.command("hparams")
def hparams_command(
    algorithm: str = typer.Argument(..., help="Algorithm: erm, sd, irm, vrex, group_dro, lff or jtt."),
    dataset: str = typer.Argument(..., help="Dataset: two-moons, colored-mnist, celeba or synthetic."),
    seed: int = typer.Option(None, "--seed", min=0, help="Also show the random-search draw with this seed."),
    as_json: bool = typer.Option(False, "--json", help="Print only the values (the draw if --seed) as JSON."),
) -> None:
    """Default hyperparameters of ALGORITHM on DATASET, their random-search distributions and sources."""
    import json

    from gradstarve import hparams

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
    console.print(table)


def main() -> None:
    """Entry point of the ``gradstarve`` console script."""
    app()


if __name__ == "__main__":
    main()

"""`gradstarve reproduce ...`: every reproduction, alone or into one report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _DATA_ROOT_HELP,
    _parse_floats,
    _parse_names,
    _print_files,
    _print_frame,
    _print_table,
    _run_progress,
    console,
    reproduce_app,
)


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
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last memory for the ResNet (1.3x faster on this CPU; other rounding)."
    ),
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
            channels_last=channels_last,
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


@reproduce_app.command("celeba-features")
def reproduce_celeba_features(
    data_root: Path = typer.Option(
        None, "--data-root", help="The CelebA folder, or a data root holding celeba/ (e.g. ../shared/data)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Table 2's quick networks (2,000 images, 2 epochs), 256 images."),
    n: int = typer.Option(None, "--n", min=2, help="Validation images analysed (default 2,000; 256 with --quick)."),
    k: int = typer.Option(10, "--k", min=1, help="Features (Def. 1) reported."),
    resolution: int = typer.Option(32, "--resolution", min=8, help="Image side of the Table 2 runs analysed."),
    epochs: int = typer.Option(6, "--epochs", min=1, help="Epochs of the Table 2 runs analysed."),
    runs: Path = typer.Option(
        None, "--runs", help="Folder of run folders: Table 2's, to analyse its runs (default: OUT/runs)."
    ),
    out: Path = typer.Option(Path("outputs/celeba-features"), "--out", help="Folder for features.md and the figures."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (cuda when available)."),
) -> None:
    """Def. 1 / Eq. 8 on CelebA's ResNet: the features of the network at initialisation, and how much of the ERM
    and the SD network's response each carries, aligned with the label, gender and four other attributes."""
    from gradstarve.experiments.reproduce.base import DataMissingError
    from gradstarve.experiments.reproduce.celeba_features import FeaturesSetup, run_features

    setup = FeaturesSetup(quick=quick, n=n, k=k, resolution=resolution, epochs=epochs)
    try:
        reproduction = run_features(out, setup, data_root=data_root, runs_dir=runs, device=device, progress=True)
    except (DataMissingError, ValueError, RuntimeError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    _print_frame(reproduction.tables["response-weighted alignment"].round(3), reproduction.title)
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


@reproduce_app.callback(invoke_without_command=True)
def reproduce_everything(
    ctx: typer.Context,
    quick: bool = typer.Option(
        False, "--quick", help="Fewer seeds and steps: under 10 minutes on 2 CPU cores (data sets skipped if absent)."
    ),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    out: Path = typer.Option(Path("outputs/reproduce"), "--out", help="Folder for every part and the report."),
    only: str = typer.Option(
        None,
        help="Comma-separated subset: fig6, starvation, legendre, two-moons, colored-mnist, celeba, celeba-features.",
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

"""`gradstarve sweep ...`: launch, status, collect, clean up."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _DATA_ROOT_HELP,
    _parse_names,
    _print_frame,
    _print_table,
    _run_progress,
    console,
    sweep_app,
)


class Backend(str, Enum):
    local = "local"
    ray = "ray"


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

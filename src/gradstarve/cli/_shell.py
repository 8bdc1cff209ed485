"""The CLI's shell: the typer apps, the console, and the one table / progress / file printers every command uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Literal

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        overall = bar.add_task("[bold]runs", total=total)
        active: dict[str, TaskID] = {}

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
        justify: Literal["left", "right"] = "left" if column in text_columns else "right"
        table.add_column(header, justify=justify, no_wrap=column in no_wrap)
    for row in frame.itertuples(index=False):
        table.add_row(*(str(value) for value in row))
    _print_table(table)


class DataSet(str, Enum):
    mnist = "mnist"


_DATA_ROOT_HELP = "Data root (default: $GRADSTARVE_DATA, else $XDG_CACHE_HOME/gradstarve or ~/.cache/gradstarve)."


def _parse_names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter("expected comma-separated names", param_hint=option)
    return names

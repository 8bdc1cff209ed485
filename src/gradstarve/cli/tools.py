"""`gradstarve analyse` and `gradstarve hparams`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _DATA_ROOT_HELP,
    _print_frame,
    _print_table,
    app,
    console,
)


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

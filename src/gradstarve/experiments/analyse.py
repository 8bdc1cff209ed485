"""The starvation diagnosis of a trained run: a run folder in, :func:`gradstarve.analysis.starvation_report` out.

The run's network at initialisation is rebuilt from its configuration (initialisation is seeded by the run's
seed, so it is the exact network training started from) and its trained weights are read from the run's
checkpoint (``weights_only``, checksummed: a run folder never executes code). The features (Def. 1) are those of the
network at initialisation; the responses (Eq. 8) those of the trained one: which of the features the network
started with did training use, and which did it starve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from gradstarve.analysis import FeatureAnalysis, starvation_report
from gradstarve.experiments.execute import config_from_dict
from gradstarve.experiments.runs import DamagedRunError, RunConfig, load_checkpoint
from gradstarve.experiments.tables import markdown_table
from gradstarve.experiments.tasks import Task, load_task


@dataclass
class RunAnalysis:
    """The report of one run: the table (one row per feature), its figure, and the files written."""

    table: pd.DataFrame
    figure: Figure
    files: list[Path]


def load_run_networks(
    run_dir: Path | str, *, task: Task | None = None, data_root: Path | str | None = None
) -> tuple[RunConfig, Task, nn.Module, nn.Module]:
    """``(config, task, initial, trained)`` of the run in ``run_dir``, both networks in eval mode.

    ``initial`` is rebuilt from the configuration with the run's seed (the exact network training started from);
    ``trained`` holds the checkpoint's weights (``weights_only``, checksummed). ``task``: the run's task already
    loaded (else it is loaded from the configuration, with ``data_root``). Raises ``ValueError`` naming the file
    when the folder has no readable config or checkpoint.
    """
    run_dir = Path(run_dir)
    config_path, checkpoint = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not config_path.is_file():
        raise ValueError(f"{run_dir} is not a run folder: {config_path} is missing")
    if not checkpoint.is_file():
        raise ValueError(f"{run_dir} has no checkpoint.pt with trained weights (finished runs copied without it)")
    try:
        config = config_from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{config_path} cannot be read as a run configuration ({error})") from None
    if task is None:
        options = {**config.data, **({"data_root": str(data_root)} if data_root is not None else {})}
        task = load_task(config.dataset, options, config.seed)
    initial = task.build_model(config.hparams, torch.Generator().manual_seed(config.seed))
    trained = task.build_model(config.hparams, torch.Generator().manual_seed(config.seed))
    state = load_checkpoint(checkpoint)
    weights = {key[len("model.") :]: value for key, value in state["algorithm"].items() if key.startswith("model.")}
    try:
        trained.load_state_dict(weights)
    except RuntimeError as error:
        raise DamagedRunError(f"{checkpoint} does not hold this run's model ({error})") from None
    return config, task, initial.eval(), trained.eval()


def analyse_run(
    run_dir: Path | str,
    *,
    split: str = "test",
    n: int = 1000,
    k: int = 10,
    data_root: Path | str | None = None,
    out_dir: Path | str | None = None,
    attributes: dict[str, Any] | None = None,
) -> RunAnalysis:
    """Diagnose the run in ``run_dir`` on ``n`` examples of its task's ``split`` (a seeded random subset).

    Writes ``starvation.md`` (the table, the verdict, the groups) and ``starvation.png`` into ``out_dir`` (default
    ``run_dir/analysis``). Raises ``ValueError`` naming the file when the folder has no readable config or checkpoint.
    """
    run_dir = Path(run_dir)
    config, task, initial, trained = load_run_networks(run_dir, data_root=data_root)
    if split not in task.evaluation:
        raise ValueError(f"split must be one of {sorted(task.evaluation)}, got {split!r}")
    data = task.evaluation[split]
    if len(data) > n:
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed))[:n].sort().values
        data = data.subset(index)
    x = data.x.double()
    at_init = FeatureAnalysis(k=min(k, len(data))).fit(initial.double(), x, data.y)
    table, figure = starvation_report(
        trained.double(),
        x,
        data.y,
        data.group,
        attributes=attributes,
        group_names=list(data.group_names),
        analysis=at_init,
    )
    out = Path(out_dir) if out_dir is not None else run_dir / "analysis"
    description = (
        f"{config.algorithm} on {config.dataset}, seed {config.seed}; {len(data)} examples of `{split}`; features "
        "of the network at initialisation (Def. 1), responses of the trained one (Eq. 8)."
    )
    files = write_starvation_report(table, figure, out, f"Starvation diagnosis: {run_dir.name}", description)
    return RunAnalysis(table, figure, files)


def write_starvation_report(
    table: pd.DataFrame, figure: Figure, out_dir: Path | str, title: str, description: str
) -> list[Path]:
    """Write a :func:`~gradstarve.analysis.starvation_report` as ``starvation.md`` (title, description, the
    verdict, the per-feature table, the per-group table) and ``starvation.png`` into ``out_dir``; return both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "starvation.png", dpi=120, bbox_inches="tight")
    shown = table.drop(columns=[c for c in table.columns if c.startswith("z[")]).round(4)
    text = "\n".join(
        [
            f"# {title}",
            "",
            description,
            "",
            *[f"- {sentence}" for sentence in table.attrs["verdict"]],
            "",
            markdown_table(shown),
            "## Groups",
            "",
            markdown_table(table.attrs["groups"].round(4)),
            "![starvation](starvation.png)",
            "",
        ]
    )
    (out / "starvation.md").write_text(text)
    return [out / "starvation.md", out / "starvation.png"]

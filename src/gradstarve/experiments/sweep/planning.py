"""Planning: a :class:`~.spec.SweepSpec` into the list of :class:`~gradstarve.experiments.execute.PlannedRun`, each
setting drawn with its own seed (DomainBed's and SubpopBench's seeded random search) or taken from a grid."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from gradstarve.experiments.execute import (
    PlannedRun,
)
from gradstarve.experiments.runs import (
    RunConfig,
)
from gradstarve.experiments.sweep.spec import SweepSpec
from gradstarve.hparams import default_hparams, distribution_from_spec, random_hparams


def draw_seed(hparams_seed: int, index: int) -> int:
    """The :func:`~gradstarve.hparams.random_hparams` seed of draw ``index`` (>= 1) of a sweep: a hash of both, so
    draws of different ``hparams_seed`` do not overlap."""
    digest = hashlib.sha256(f"sweep-draw:{hparams_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _settings(spec: SweepSpec, method: str, dataset: str) -> list[dict[str, Any]]:
    algorithm = spec.algorithm_of(method)
    variant = spec.variants.get(method, {})
    grid = variant.get("grid", {})
    if grid:  # exactly the grid's points
        points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        settings = [default_hparams(algorithm, dataset) for _ in points]
    else:
        points = []
        search = {k: distribution_from_spec(v, k) for k, v in variant.get("search", {}).items()}
        settings = [{**default_hparams(algorithm, dataset), **variant.get("defaults", {})}]
        settings += [
            random_hparams(algorithm, dataset, draw_seed(spec.hparams_seed, i), search)
            for i in range(1, spec.n_hparams + 1)
        ]
    for index, hparams in enumerate(settings):
        hparams.update({k: v for k, v in spec.overrides.items() if k in hparams})
        hparams.update(variant.get("overrides", {}))
        if points:
            hparams.update(points[index])
        for name in variant.get("remove", ()):
            hparams.pop(name, None)
        if spec.steps is not None:
            hparams.pop("epochs", None)  # an explicit step count replaces an epoch count
            hparams["steps"] = spec.steps
    return settings


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of ``spec``, ordered dataset, seed, algorithm, setting (runs sharing data are neighbours).

    Identical configurations (a draw equal to the defaults, when nothing is searched) are one run, listed once
    under the lowest setting. Two *different* configurations with one folder name (a hash collision, about 2^-64
    per pair) raise ``ValueError`` rather than share a folder.
    """
    runs: dict[str, PlannedRun] = {}
    for dataset in spec.datasets:
        for seed in spec.seeds:
            for method in spec.algorithms:
                options = {**spec.data.get(dataset, {}), **spec.variants.get(method, {}).get("data", {})}
                for index, hparams in enumerate(_settings(spec, method, dataset)):
                    config = RunConfig(
                        dataset,
                        spec.algorithm_of(method),
                        hparams,
                        seed,
                        data=options,
                        eval_every=spec.eval_every,
                        eval_splits=spec.eval_splits,
                        precision=spec.precision,
                    )
                    name = config.folder_name()
                    if name in runs:
                        if runs[name].config.identity() != config.identity():
                            raise ValueError(
                                f"hash collision: two different configurations are both named {name}; change "
                                "hparams_seed to draw other settings"
                            )
                        continue
                    grid = spec.variants.get(method, {}).get("grid", {})
                    setting = (
                        ", ".join(
                            f"{k}={hparams[k]:g}" if isinstance(hparams[k], float) else f"{k}={hparams[k]}"
                            for k in grid
                        )
                        or None
                    )
                    runs[name] = PlannedRun(config, index, method, setting)
    return list(runs.values())

"""Planning: a :class:`~.spec.SweepSpec` into the list of :class:`~gradstarve.experiments.execute.PlannedRun`, each
setting drawn with its own seed (DomainBed's and SubpopBench's seeded random search) or taken from a grid."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

from gradstarve.experiments.execute import (
    PlannedRun,
)
from gradstarve.experiments.runs import (
    RunConfig,
)
from gradstarve.experiments.sweep.spec import SweepSpec
from gradstarve.hparams import default_hparams, distribution_from_spec, random_hparams

#: How many draws past ``n_hparams`` :func:`_settings` tries for settings that repeat an earlier one.
_SPARE_DRAWS = 100


def draw_seed(hparams_seed: int, index: int) -> int:
    """The :func:`~gradstarve.hparams.random_hparams` seed of draw ``index`` (>= 1) of a sweep: a hash of both, so
    draws of different ``hparams_seed`` do not overlap."""
    digest = hashlib.sha256(f"sweep-draw:{hparams_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _finish(
    spec: SweepSpec, variant: Mapping[str, Any], hparams: dict[str, Any], point: dict | None = None
) -> dict[str, Any]:
    """A setting as it runs: the sweep's and the variant's overrides, a grid point, removals, a step count."""
    hparams.update({k: v for k, v in spec.overrides.items() if k in hparams})
    hparams.update(variant.get("overrides", {}))
    hparams.update(point or {})
    for name in variant.get("remove", ()):
        hparams.pop(name, None)
    if spec.steps is not None:
        hparams.pop("epochs", None)  # an explicit step count replaces an epoch count
        hparams["steps"] = spec.steps
    return hparams


def _settings(spec: SweepSpec, method: str, dataset: str) -> list[tuple[int, dict[str, Any]]]:
    """Each setting of ``method`` as ``(index, hparams)``: the grid's points in order; or 0, the defaults, then
    draws ``1..n_hparams``. Where draws repeat an earlier setting (a small discrete space: JTT's 4 x 5 grid of T and
    λ_up), further draws ``n_hparams + 1, ...`` are added, each only if it is new, until there are ``n_hparams + 1``
    distinct settings or :data:`_SPARE_DRAWS` more draws found none. The repeats stay: :func:`plan` makes each one
    run with the setting it repeats."""
    algorithm = spec.algorithm_of(method)
    variant = spec.variants.get(method, {})
    grid = variant.get("grid", {})
    if grid:  # exactly the grid's points
        points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        return [(i, _finish(spec, variant, default_hparams(algorithm, dataset), p)) for i, p in enumerate(points)]
    search = {k: distribution_from_spec(v, k) for k, v in variant.get("search", {}).items()}
    default = _finish(spec, variant, {**default_hparams(algorithm, dataset), **variant.get("defaults", {})})
    settings, distinct = [(0, default)], [default]
    for index in itertools.count(1):
        if index > spec.n_hparams and (len(distinct) > spec.n_hparams or index > spec.n_hparams + _SPARE_DRAWS):
            break
        hparams = _finish(
            spec, variant, random_hparams(algorithm, dataset, draw_seed(spec.hparams_seed, index), search)
        )
        new = hparams not in distinct
        if new:
            distinct.append(hparams)
        if new or index <= spec.n_hparams:
            settings.append((index, hparams))
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
                for index, hparams in _settings(spec, method, dataset):
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

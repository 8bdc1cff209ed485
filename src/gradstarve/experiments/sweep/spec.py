"""A sweep's specification (:class:`SweepSpec`: data sets x algorithms x seeds x settings, with named variants) and
its JSON file in the sweep folder."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradstarve.experiments.tasks import check_task_options, task_names
from gradstarve.hparams import ALGORITHM_NAMES, default_hparams, distribution_from_spec

BACKENDS = ("local", "ray")


SPEC_FILE = "spec.json"


RUNS_DIR = "runs"


RESULTS_DIR = "results"


# --------------------------------------------------------------------------------------------------------------
# What to run
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """A sweep: every combination of ``datasets`` x ``algorithms`` x hyperparameter settings x ``seeds``.

    Attributes:
        datasets, algorithms: names from :func:`gradstarve.experiments.tasks.task_names` and
            :data:`gradstarve.hparams.ALGORITHM_NAMES`.
        seeds: trial seeds (model initialisation, batch order, the data's randomness).
        n_hparams: random hyperparameter draws besides the defaults (0: defaults only).
        hparams_seed: seeds the draws (draw ``i`` uses :func:`draw_seed` ``(hparams_seed, i)``).
        steps: training length of every run (replaces the table's ``steps``, or its ``epochs``); ``None``: table's.
        overrides: hyperparameter values for every run that has the hyperparameter (e.g. ``{"sd_lam": 0.1}``
            changes SD runs only); a name no (algorithm, dataset) pair of the sweep knows is refused.
        data: task options per dataset, e.g. ``{"colored-mnist": {"val_fraction": 0.1}}``.
        eval_every, eval_splits, precision: as :class:`~gradstarve.experiments.train.RunConfig`.
        variants: named methods built on an algorithm, usable in ``algorithms`` beside the plain names, e.g.
            ``{"sd_eq25": {"algorithm": "sd", "overrides": {"sd_gamma": 0.0}, "search": {"sd_lam": {"log_uniform":
            [1e-3, 30]}}, "defaults": {"sd_lam": 0.1}}}``. ``grid`` (``{"sd_lam": [0.1, 1.0]}``) makes the
            variant's settings exactly the grid's points, in order (its cartesian product; no default, no draws);
            ``data`` adds task options to the spec's for this variant's runs; ``search`` replaces the table's
            search distributions
            (:func:`gradstarve.hparams.distribution_from_spec`), ``defaults`` changes setting 0 only, ``overrides``
            every setting (after the sweep's own ``overrides``), ``remove`` drops hyperparameters the variant does
            not read (e.g. ``momentum`` once the optimizer is Adam). Runs of a variant are grouped under its name;
            a variant may carry its own algorithm's name (``"erm": {"algorithm": "erm", "overrides": ...}``).
    """

    datasets: tuple[str, ...]
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    n_hparams: int = 0
    hparams_seed: int = 0
    steps: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    eval_every: int = 100
    eval_splits: tuple[str, ...] | None = None
    precision: str = "float32"
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("datasets", "algorithms", "seeds"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
            if len(set(getattr(self, name))) != len(value):
                raise ValueError(f"{name} has duplicates: {list(value)}")
        unknown = [d for d in self.datasets if d not in task_names()]
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; known: {', '.join(task_names())}")
        self._check_variants()
        unknown = [a for a in self.algorithms if a not in ALGORITHM_NAMES and a not in self.variants]
        if unknown:
            known = ", ".join([*ALGORITHM_NAMES, *self.variants])
            raise ValueError(f"unknown algorithms {unknown}; known: {known} (variants are defined in 'variants')")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        for name, low in (("n_hparams", 0), ("hparams_seed", 0), ("eval_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"steps must be an integer >= 1 or None, got {self.steps!r}")
        extra = set(self.data) - set(self.datasets)
        if extra:
            raise ValueError(f"data options given for datasets not in the sweep: {sorted(extra)}")
        if self.eval_splits is not None:
            object.__setattr__(self, "eval_splits", tuple(self.eval_splits))
        known = {
            name for d in self.datasets for a in self.algorithms for name in default_hparams(self.algorithm_of(a), d)
        } | {"steps"}
        unknown = set(self.overrides) - known
        if unknown:
            raise ValueError(f"overrides name unknown hyperparameters {sorted(unknown)}; known: {sorted(known)}")

    def _check_variants(self) -> None:
        fields_ = {"algorithm", "defaults", "overrides", "search", "remove", "grid", "data", "label"}
        for name, variant in self.variants.items():
            if not isinstance(variant, Mapping) or variant.get("algorithm") not in ALGORITHM_NAMES:
                raise ValueError(f"variant {name!r} needs 'algorithm', one of {', '.join(ALGORITHM_NAMES)}")
            if name in ALGORITHM_NAMES and name != variant["algorithm"]:
                raise ValueError(f"variant {name!r} has the name of another algorithm; give it its own name")
            extra = set(variant) - fields_
            if extra:
                raise ValueError(f"variant {name!r}: unknown fields {sorted(extra)}; known: {sorted(fields_)}")
            for dataset in self.datasets:
                known = set(default_hparams(variant["algorithm"], dataset))
                for part in ("defaults", "overrides", "search", "remove", "grid"):
                    unknown = set(variant.get(part, ())) - known
                    if unknown:
                        raise ValueError(f"variant {name!r} {part}: unknown hyperparameters {sorted(unknown)}")
            grid = variant.get("grid", {})
            if grid and (variant.get("search") or variant.get("defaults")):
                raise ValueError(f"variant {name!r}: a grid replaces the default and the random draws; drop them")
            clash = set(grid) & set(variant.get("overrides", {}))
            if clash:
                raise ValueError(f"variant {name!r}: {sorted(clash)} are both grid axes and overrides")
            if any(not isinstance(values, list | tuple) or not values for values in grid.values()):
                raise ValueError(f"variant {name!r}: every grid axis needs a non-empty list of values")
            if variant.get("data"):
                for dataset in self.datasets:
                    check_task_options(dataset, {**self.data.get(dataset, {}), **variant["data"]})
            for key, distribution in variant.get("search", {}).items():
                distribution_from_spec(distribution, f"variant {name!r} search {key!r}")

    def algorithm_of(self, method: str) -> str:
        """The algorithm a method of ``algorithms`` runs (itself, or its variant's algorithm)."""
        return self.variants[method]["algorithm"] if method in self.variants else method

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["overrides"] = dict(self.overrides)
        values["data"] = {k: dict(v) for k, v in self.data.items()}
        values["variants"] = json.loads(json.dumps(self.variants))
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SweepSpec:
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown sweep spec fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)


def load_spec(path: Path | str) -> SweepSpec:
    """A :class:`SweepSpec` from a ``.json`` or ``.toml`` file (the field names of :class:`SweepSpec`)."""
    path = Path(path)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError("TOML sweep specs need Python >= 3.11; write the spec as JSON") from None
        values = tomllib.loads(path.read_text())
    elif path.suffix == ".json":
        values = json.loads(path.read_text())
    else:
        raise ValueError(f"a sweep spec is a .json or .toml file, got {path}")
    return SweepSpec.from_dict(values)


# --------------------------------------------------------------------------------------------------------------
# The sweep folder
# --------------------------------------------------------------------------------------------------------------
def runs_root(sweep_dir: Path | str) -> Path:
    return Path(sweep_dir) / RUNS_DIR


def save_spec(sweep_dir: Path | str, spec: SweepSpec) -> Path:
    """Write ``spec`` to ``sweep_dir/spec.json``; refuse if the folder already holds a different spec."""
    path = Path(sweep_dir) / SPEC_FILE
    if path.exists():
        existing = SweepSpec.from_dict(json.loads(path.read_text()))
        if existing != spec:
            raise ValueError(f"{path} holds a different sweep; relaunch it without spec options, or use another folder")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return path


def open_spec(sweep_dir: Path | str) -> SweepSpec:
    """The spec of an existing sweep folder."""
    path = Path(sweep_dir) / SPEC_FILE
    if not path.exists():
        raise ValueError(f"{sweep_dir} is not a sweep folder (no {SPEC_FILE}); launch a sweep there first")
    return SweepSpec.from_dict(json.loads(path.read_text()))

"""What Table 1 and Fig. 4 run: the rows (:data:`METHODS`), :class:`ColoredMNISTSetup`, the sweep specs of the λ
search and of the table, and reading which planned runs finished (:func:`finished_rows`, :func:`audit_runs`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradstarve.experiments.execute import PlannedRun
from gradstarve.experiments.runs import (
    PRECISIONS,
    RunConfig,
    inspect_run,
    nonfinite_metrics,
)
from gradstarve.experiments.selection import mean_std, select_hyperparameters, select_step
from gradstarve.experiments.sweep import SweepSpec, plan
from gradstarve.hparams import colored_mnist_oracle_overrides, default_hparams

DATASET = "colored-mnist"


#: Hyperparameters counted in optimisation steps (scaled together by ``step_scale``).
STEP_HPARAMS = ("steps", "sd_anneal_steps", "irm_anneal_steps", "vrex_anneal_steps")


RULES = ("last_step", "training_domain_validation")


RULE_LABELS = {
    "last_step": "(a) fixed number of steps (paper's protocol)",
    "training_domain_validation": "(b) best step on held-out training-environment validation",
}


FIG4_METHODS = ("erm", "sd", "sd_eq25", "irm")


#: The rows of Table 1 held to the paper's numbers (the fidelity target): the paper's own protocol.
MAIN_ROWS = ("erm", "sd", "irm", "vrex", "oracle")


@dataclass(frozen=True)
class Method:
    """One row of Table 1: an algorithm with overrides of its ``colored-mnist`` defaults.

    Attributes:
        lambda_rule: for the plain Eq. 25 rows, the selection rule that picks λ among the search runs.
        paper: key of :data:`~gradstarve.experiments.reproduce.paper_numbers.TABLE1` printed beside it.
    """

    key: str
    label: str
    algorithm: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    lambda_rule: str | None = None
    paper: str | None = None


_EQ25 = {"sd_schedule": "constant", "sd_anneal_steps": 0}


_NO_RESET = {"reset_optimizer_at_anneal": False}


METHODS: dict[str, Method] = {
    "erm": Method("erm", "ERM", "erm", paper="erm"),
    "sd": Method("sd", "SD, released schedule (λ=4e-5; loss ×2e-5 from step {switch})", "sd", paper="sd"),
    "sd_eq25": Method(
        "sd_eq25",
        "SD, plain Eq. 25 (λ by training-domain validation)",
        "sd",
        _EQ25,
        lambda_rule="training_domain_validation",
        paper="sd",
    ),
    "sd_eq25_test": Method(
        "sd_eq25_test",
        "SD, plain Eq. 25 (λ tuned on test: ORACLE, as the paper)",
        "sd",
        _EQ25,
        lambda_rule="test_domain_oracle",
        paper="sd",
    ),
    "irm": Method("irm", "IRM", "irm", _NO_RESET, paper="irm"),
    "vrex": Method("vrex", "V-REx", "vrex", _NO_RESET, paper="vrex"),
    "oracle": Method(
        "oracle",
        "Oracle: ERM on grayscale images (IRM reference's grayscale model)",
        "erm",
        colored_mnist_oracle_overrides(),
        {"merge_channels": True},
        paper="oracle",
    ),
    "gray_erm": Method(
        "gray_erm",
        "ERM's settings on gray images, 392 inputs (diagnostic)",
        "erm",
        data={"gray": True},
    ),
}


@dataclass(frozen=True)
class ColoredMNISTSetup:
    """What to run. The defaults are the full reproduction; :meth:`quick` a few-minute version.

    Attributes:
        seeds: reported seeds (each seeds the data draw, the initialisation and everything else of a run).
        methods: keys of :data:`METHODS`.
        precision: ``"float32"`` or ``"bfloat16"`` (autocast; a different run identity).
        val_fraction: fraction of each training environment held out for rule (b) and the λ search (0: no
            validation split, rule (a) only, and ``sd_lambda`` must be given for the Eq. 25 rows).
        eval_every: evaluation (and checkpoint) interval in steps.
        sd_lambdas, search_seeds: the λ grid and seeds of the Eq. 25 search (the grid brackets λ = 2, the penalty
            the released schedule applies after its switch).
        sd_lambda: use this λ for both Eq. 25 rows instead of searching.
        step_scale: multiply every step count of :data:`STEP_HPARAMS` (steps and anneal steps) by this.
        n_train, n_test: use fewer MNIST images (training pool, test environment); ``None``: the paper's 50,000
            and 10,000.
    """

    seeds: tuple[int, ...] = tuple(range(10))
    methods: tuple[str, ...] = tuple(METHODS)
    precision: str = "float32"
    val_fraction: float = 0.1
    eval_every: int = 50
    sd_lambdas: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0, 4.0)
    search_seeds: tuple[int, ...] = (100, 101)
    sd_lambda: float | None = None
    step_scale: float = 1.0
    n_train: int | None = None
    n_test: int | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known: {', '.join(METHODS)}")
        if not self.seeds:
            raise ValueError("seeds: need at least one seed")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.step_scale <= 0:
            raise ValueError(f"step_scale must be > 0, got {self.step_scale}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        needs_search = any(METHODS[m].lambda_rule for m in self.methods) and self.sd_lambda is None
        if needs_search and (not self.sd_lambdas or not self.search_seeds):
            raise ValueError("the Eq. 25 rows need sd_lambdas and search_seeds (or a fixed sd_lambda)")
        if needs_search and self.val_fraction == 0 and "sd_eq25" in self.methods:
            raise ValueError("sd_eq25 selects λ on validation data: set val_fraction > 0 or give sd_lambda")

    @classmethod
    def quick_setup(cls, **changes: Any) -> ColoredMNISTSetup:
        """A few minutes on 2 CPU cores (best on one thread, see the CLI's ``--threads``): seeds 0 and 1, 2,000
        training images (900 + 900 trained on), a 1,000-image test environment, every step count scaled by 0.2 (ERM
        200 steps, SD 400 with the released schedule's switch at step 90, IRM / V-REx 100), and plain Eq. 25 at
        λ = 2 only (a one-point "search": both Eq. 25 rows share it); ``changes`` override.

        What it can show: ERM taking the colour shortcut (test accuracy near 10 %), the gray-image oracle far above
        it, IRM and V-REx moving off the shortcut. It cannot show Spectral Decoupling's effect: the released
        schedule acts only in the ~1,000 steps after its switch (Adam's memory), and 1,800 examples are memorised
        within a few hundred steps."""
        base = cls(
            seeds=(0, 1),
            eval_every=10,
            sd_lambdas=(2.0,),
            search_seeds=(100,),
            step_scale=0.2,
            n_train=2_000,
            n_test=1_000,
            quick=True,
        )
        return replace(base, **changes)

    @property
    def needs_search(self) -> bool:
        return self.sd_lambda is None and any(METHODS[m].lambda_rule for m in self.methods)

    def data_options(self, method_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"val_fraction": self.val_fraction, "fig4": True, **(method_options or {})}
        if self.n_train is not None:
            options["n_train"] = self.n_train
        if self.n_test is not None:
            options["n_test"] = self.n_test
        return options

    def scaled(self, value: int, minimum: int = 0) -> int:
        return max(minimum, round(value * self.step_scale))

    def switch_step(self) -> int:
        """The step at which the released SD schedule multiplies the loss by ``sd_coef`` (450, scaled)."""
        return self.scaled(int(default_hparams("sd", DATASET)["sd_anneal_steps"]))


def method_variant(setup: ColoredMNISTSetup, method: str, sd_lam: float | None = None) -> dict[str, Any]:
    """``method`` (a key of :data:`METHODS`) under ``setup`` as a :class:`~gradstarve.experiments.sweep.SweepSpec`
    variant: its algorithm, its overrides of the ``colored-mnist`` defaults (step counts scaled), its data options,
    and for the Eq. 25 rows their λ (``sd_lam``)."""
    spec = METHODS[method]
    defaults = default_hparams(spec.algorithm, DATASET)
    overrides = dict(spec.overrides)
    if setup.step_scale != 1.0:  # the method's own step counts (the oracle's 101), scaled
        for name in STEP_HPARAMS:
            if name in defaults:
                value = int(overrides.get(name, defaults[name]))
                overrides[name] = setup.scaled(value, minimum=1 if name == "steps" else 0)
    if spec.lambda_rule is not None:
        if sd_lam is None:
            raise ValueError(f"{method} needs its λ (sd_lam)")
        overrides["sd_lam"] = float(sd_lam)
    return {"algorithm": spec.algorithm, "label": spec.label, "overrides": overrides, "data": dict(spec.data)}


def _spec(setup: ColoredMNISTSetup, variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> SweepSpec:
    return SweepSpec(
        datasets=(DATASET,),
        algorithms=tuple(variants),
        seeds=tuple(seeds),
        data={DATASET: setup.data_options()},
        eval_every=setup.eval_every,
        precision=setup.precision,
        variants=dict(variants),
    )


def method_config(setup: ColoredMNISTSetup, method: str, seed: int, sd_lam: float | None = None) -> RunConfig:
    """The :class:`RunConfig` of ``method`` (a key of :data:`METHODS`) and ``seed`` under ``setup``: the one the
    sweep plans for it (:func:`table_spec`)."""
    return plan(_spec(setup, {method: method_variant(setup, method, sd_lam)}, (seed,)))[0].config


def search_spec(setup: ColoredMNISTSetup) -> SweepSpec:
    """The Eq. 25 λ search as a sweep: a grid over :attr:`ColoredMNISTSetup.sd_lambdas` on the search seeds."""
    variant = method_variant(setup, "sd_eq25", setup.sd_lambdas[0])
    variant["overrides"].pop("sd_lam")
    variant["grid"] = {"sd_lam": [float(lam) for lam in setup.sd_lambdas]}
    return _spec(setup, {"sd_search": variant}, setup.search_seeds)


def table_spec(setup: ColoredMNISTSetup, chosen: Mapping[str, float] | None = None) -> SweepSpec | None:
    """Table 1's runs as a sweep: every method of ``setup`` on its seeds; the Eq. 25 rows only once their λ is
    known (``chosen``: selection rule -> λ). ``None`` when no method can be planned yet."""
    chosen = chosen or {}
    variants = {}
    for method in setup.methods:
        rule = METHODS[method].lambda_rule
        if rule is not None and rule not in chosen:
            continue
        variants[method] = method_variant(setup, method, chosen.get(rule) if rule else None)
    return _spec(setup, variants, setup.seeds) if variants else None


def search_configs(setup: ColoredMNISTSetup) -> list[tuple[float, RunConfig]]:
    """The Eq. 25 λ search: one run per (λ, search seed), seed-major as the sweep plans it."""
    return [(float(run.config.hparams["sd_lam"]), run.config) for run in plan(search_spec(setup))]


def finished_rows(runs_root: Path, config: RunConfig) -> list[dict[str, Any]] | None:
    """The metrics rows of ``config``'s run if it has finished, is intact and finite, else ``None`` (such runs are
    named by :func:`audit_runs`, never counted as seeds)."""
    inspection = inspect_run(Path(runs_root) / config.folder_name(), config)
    if not inspection.finished or nonfinite_metrics(inspection.rows):
        return None
    return inspection.rows


def planned_runs(setup: ColoredMNISTSetup, chosen: Mapping[str, float] | None = None) -> list[PlannedRun]:
    """Every run of ``setup``: the λ search (when needed), then Table 1's (the Eq. 25 rows once λ is ``chosen``);
    a run two rows share (both rules chose one λ) is listed once."""
    runs = plan(search_spec(setup)) if setup.needs_search else []
    if setup.sd_lambda is not None:
        chosen = {rule: setup.sd_lambda for rule in ("training_domain_validation", "test_domain_oracle")}
    table = table_spec(setup, chosen)
    names = {run.folder_name for run in runs}
    return runs + [run for run in (plan(table) if table else []) if run.folder_name not in names]


def audit_runs(setup: ColoredMNISTSetup, runs_root: Path, search: LambdaSearch) -> list[str]:
    """One note per problem among the planned runs: each damaged or diverged run by folder, and the missing and
    unfinished ones grouped by method (with their seeds). Empty when every planned run has finished intact."""
    damaged, absent = [], {}
    for run in planned_runs(setup, search.chosen):
        inspection = inspect_run(Path(runs_root) / run.config.folder_name(), run.config)
        if inspection.state == "damaged":
            damaged.append(f"{run.config.folder_name()}: {inspection.problem}")
        elif inspection.finished and nonfinite_metrics(inspection.rows):
            keys = ", ".join(nonfinite_metrics(inspection.rows)[:3])
            damaged.append(f"{run.config.folder_name()}: non-finite {keys} (diverged)")
        elif not inspection.finished:
            name = "λ search" if run.method == "sd_search" else run.method
            detail = f"{run.setting} s{run.config.seed}" if run.setting else f"s{run.config.seed}"
            absent.setdefault((name, inspection.state), []).append(detail)
    notes = [f"Damaged run, not counted: {line}" for line in damaged]
    for (name, state), seeds in absent.items():
        notes.append(f"{state.capitalize()} runs, not counted: {name} {', '.join(seeds)} (in {runs_root})")
    return notes


# --------------------------------------------------------------------------------------------------------------
# The λ search of the plain Eq. 25 rows
# --------------------------------------------------------------------------------------------------------------
@dataclass
class LambdaSearch:
    """Outcome of the Eq. 25 λ search (``chosen`` maps a selection rule to its λ; empty until every run finished)."""

    rows: list[dict[str, Any]]
    chosen: dict[str, float]
    finished: int
    total: int

    @property
    def complete(self) -> bool:
        return self.finished == self.total


def lambda_search(setup: ColoredMNISTSetup, runs_root: Path) -> LambdaSearch:
    """Read the search runs; once all have finished, choose λ by each rule of the Eq. 25 rows."""
    if setup.sd_lambda is not None:
        rules = {METHODS[m].lambda_rule for m in setup.methods if METHODS[m].lambda_rule}
        return LambdaSearch([], dict.fromkeys(rules, setup.sd_lambda), 0, 0)
    runs: dict[float, list[list[dict[str, Any]]]] = {lam: [] for lam in setup.sd_lambdas}
    for lam, config in search_configs(setup):
        rows = finished_rows(runs_root, config)
        if rows:
            runs[lam].append(rows)
    finished = sum(len(v) for v in runs.values())
    total = len(setup.sd_lambdas) * len(setup.search_seeds)
    chosen: dict[str, float] = {}
    if finished == total:
        for rule in ("training_domain_validation", "test_domain_oracle"):
            if rule == "training_domain_validation" and setup.val_fraction == 0:
                continue
            chosen[rule] = float(select_hyperparameters(runs, rule).key)
    table = []
    for lam, seed_runs in runs.items():
        row: dict[str, Any] = {
            "sd_lam": lam,
            "seeds_finished": len(seed_runs),
            "seeds_planned": len(setup.search_seeds),
        }
        for rule in ("last_step", "training_domain_validation", "test_domain_oracle"):
            if rule == "training_domain_validation" and setup.val_fraction == 0:
                continue
            picked = [select_step(rows, rule) for rows in seed_runs]
            for split in ("train", "val", "test"):
                key = f"{split}/accuracy"
                values = [100 * p[key] for p in picked if key in p]
                row[f"{rule}:{split}_mean"], row[f"{rule}:{split}_std"] = mean_std(values)
        row["chosen_by_validation"] = chosen.get("training_domain_validation") == lam
        row["chosen_by_test"] = chosen.get("test_domain_oracle") == lam
        table.append(row)
    return LambdaSearch(table, chosen, finished, total)

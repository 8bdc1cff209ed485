"""Table 2: CelebA (Blond_Hair vs Male), worst-group and average test accuracy of ERM, SD, Group DRO, LfF and JTT.

Protocol (Sec. 4 and App. A.3 of the paper, Sagawa et al. 2019's set-up):

* Task: ``y = Blond_Hair``, spurious attribute ``Male``, four groups ``2 y + male`` (see :mod:`gradstarve.data.celeba`);
  the rare group is blond males.
* One training run per (method, seed) through :func:`gradstarve.experiments.train.train` (run folders under
  ``runs_dir``, resumable: rerunning the same command skips finished runs and resumes killed ones). Each run is
  evaluated on ``val`` and ``test`` once per epoch (``evaluations_per_epoch``) and at its last step.
* Model selection (:mod:`gradstarve.experiments.selection`), both reported: ``worst_group_validation`` (the epoch
  with the best worst-group accuracy on ``val``) and ``average_validation`` (best average ``val`` accuracy: the
  paper's rule, "we choose the model with the best validation accuracy"). The untrained network (step 0) is not a
  candidate; for JTT only second-stage evaluations are (the first stage is an ERM model).
* Reported: test worst-group and average accuracy in percent, mean ± std over seeds (population std, ddof = 0, as
  :func:`~gradstarve.experiments.selection.mean_std`), per-group test accuracies and counts, and an exact
  Clopper-Pearson 95 % interval (:func:`gradstarve.metrics.binomial_interval`) on the worst group: per seed from its
  ``k / n``, and in the summary for one run at the mean accuracy. The paper's numbers
  (:data:`~gradstarve.experiments.reproduce.paper_numbers.TABLE2`) stand beside ours with the difference in units
  of the paper's std.

Methods (:data:`METHODS`): ``erm``; ``sd``, class-conditional Spectral Decoupling (Eq. 28 with one λ_c and one γ_c
per class, class-mean normalised as the released code, the App. A.3 values λ = (0.088, 0.012), γ = (0.44, 2.5):
``hparams.py``'s ``("sd", "celeba")`` row); ``group_dro``; ``lff``; ``jtt``. The default table runs
:data:`DEFAULT_METHODS` (the three whose worst-group and average accuracies the paper reports).

Presets (``preset``):

* ``"paper"``: ResNet-50 at 224 x 224 with the paper's hyperparameters (``hparams.py`` defaults: ImageNet-pretrained
  set-ups of Sagawa et al., Liu et al., Nam et al.). For a GPU. Pretrained only with ``pretrained_weights`` (a
  local torchvision checkpoint); without it the paper's hyperparameters run from scratch and the notes say so.
* ``"cpu"``: ResNet-18 at half width, 64 x 64 inputs, from scratch (no ImageNet weights exist offline here), with
  :data:`CPU_HPARAMS` over the paper's defaults. Measured on the 16,000-image training subset (batch 128, 125 steps
  per epoch) with one thread on a shared 2-core machine: 0.5-0.9 s per ERM / SD / Group DRO / JTT step (LfF about
  twice that), 15-35 s per evaluation of val + test (9,175 images), so 75-145 s per epoch and 25-48 min per
  20-epoch run (ERM seed 0: 2,861 s). The default 3-method x 3-seed table is thus 4-7 h on one busy core, and
  about 2-3 h on 2 idle cores (projected from the ~0.2 s forward + backward of :mod:`gradstarve.models.resnet`'s
  benchmark); ``benchmarks/celeba_table2.py`` measures it on the machine at hand. On a GPU, ``--preset cpu
  --device cuda`` should run the same table in minutes (not measured here).

How the CPU hyperparameters were chosen (validation data only, never test): the paper's values are for a pretrained
ResNet-50 with SGD at lr 1e-5, which does not train a network from scratch in a few epochs. We use the standard
from-scratch recipe for a batch-normalised ResNet (Adam, lr 1e-3, coupled weight decay 1e-4, batch 128, random
horizontal flips) for every method, so that the methods differ only in their objective, and checked it on seed 0's
validation curves: ERM's validation accuracy peaks at epoch 5 (94.4 %) and stays within a point of it to epoch 20
while the training loss keeps falling, so 20 epochs cover the selection window; Group DRO's validation worst-group
accuracy passes 80 % by epoch 3. Method-specific values keep the published ones where they are scale-free: SD's
per-class λ and γ (App. A.3), Group DRO's η = 0.01 (Sagawa et al.), LfF's q = 0.7 and EMA 0.7 (Nam et al.). JTT's
first stage is 2 epochs (Liu et al.'s T = 1 epoch is for a pretrained network, whose first-epoch errors are already
the minority groups) with λ_up = 20. None of these was searched on the CPU budget (the paper searched SD's four
values for its network; ``hparams.random_hparams("sd", "celeba", k)`` draws from that space and
``CelebASetup(hparams={"sd": ...})`` runs a draw); :data:`CPU_HPARAMS` documents each value.

``--quick`` (``quick=True``): one seed, a 2,000-image random training subset, 2 epochs (JTT T + 2), and on the cpu
preset 32 x 32 inputs (the first quick run decodes a 32-pixel cache, about half a minute): a few minutes, a smoke
test of the whole pipeline whose numbers mean nothing.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradstarve import metrics
from gradstarve.data.celeba import celeba_group_names
from gradstarve.experiments import selection, sweep
from gradstarve.experiments.compare import plus_minus
from gradstarve.experiments.reproduce._output import markdown_table, save_figure, save_table, save_text
from gradstarve.experiments.reproduce.base import DataMissingError, Reproduction, evidence
from gradstarve.experiments.reproduce.paper_numbers import PAPER_RUNS, TABLE2, difference_in_std
from gradstarve.experiments.tasks import Task, load_task
from gradstarve.experiments.train import RunConfig, inspect_run, nonfinite_metrics
from gradstarve.hparams import default_hparams
from gradstarve.models.resnet import PRESETS

METHODS: tuple[str, ...] = ("erm", "sd", "sd_eq25", "sd_margin", "group_dro", "lff", "jtt")
DEFAULT_METHODS: tuple[str, ...] = METHODS
#: Methods whose hyperparameters are searched; ``sd_margin`` is ``sd`` at its chosen setting with γ_0 on the margin.
SEARCHED_METHODS: tuple[str, ...] = ("erm", "sd", "sd_eq25", "group_dro", "lff", "jtt")
#: The algorithm each method runs (the SD rows are one algorithm with other hyperparameters).
ALGORITHM_OF: dict[str, str] = {"sd_eq25": "sd", "sd_margin": "sd"}
RULES: tuple[str, ...] = ("worst_group_validation", "average_validation")
#: Hyperparameter settings are chosen by this rule on the search seed's validation data (never test).
SEARCH_RULE = "worst_group_validation"
TARGET, ATTRIBUTE = "Blond_Hair", "Male"
GROUP_NAMES: tuple[str, ...] = celeba_group_names(TARGET, ATTRIBUTE)
LABELS: dict[str, str] = {
    "erm": "ERM",
    "sd": "SD (Eq. 28, per class, released γ convention)",
    "sd_eq25": "SD (plain Eq. 25)",
    "sd_margin": "SD (Eq. 28, γ on the true-class margin)",
    "group_dro": "Group DRO",
    "lff": "LfF",
    "jtt": "JTT",
}
PAPER_SELECTION = "average_validation"

#: Hyperparameters of the ``cpu`` preset for every method (applied over ``hparams.py``'s paper defaults; see the
#: module docstring for how they were chosen). ``momentum`` is dropped where the optimizer is Adam.
CPU_COMMON: dict[str, Any] = {
    "optimizer": "adam",  # from scratch: SGD at the paper's lr 1e-5 barely moves a randomly initialised network
    "lr": 1e-3,  # Adam's standard rate for a batch-normalised ResNet trained from scratch
    "weight_decay": 1e-4,  # mild coupled L2, the same for every method so only the objectives differ
    "batch_size": 128,  # the paper's (App. A.3); 125 steps per epoch on the 16,000-image subset
    "epochs": 20,  # ERM's validation accuracy peaks at epoch 5 (seed 0); 9 runs take 2-3 h on 2 idle cores
    "model": "resnet18",
    "pretrained": False,  # no ImageNet weights are available offline here
}
CPU_HPARAMS: dict[str, dict[str, Any]] = {
    "erm": {},
    "sd": {},  # keeps App. A.3's λ = (0.088, 0.012), γ = (0.44, 2.5): logit-scale values, not tied to the optimiser
    "sd_eq25": {"sd_lam": 0.2, "sd_gamma": 0.0},  # released table_2.sh's sp = 0.1 = λ/2, one λ, no target
    "sd_margin": {},  # sd's setting, γ_0 negated (see margin_gamma)
    "group_dro": {"groupdro_eta": 0.01},  # Sagawa et al.'s η; their strong L2 (0.1) is for SGD on a pretrained net
    "lff": {"lff_q": 0.7, "lff_ema": 0.7},  # Nam et al.'s values; batch 128 (not 256) to keep steps comparable
    "jtt": {"jtt_first_stage_epochs": 2, "jtt_upweight": 20.0, "epochs": 22},  # T = 2, then 20 final epochs
}
#: The search space of each method on the cpu preset: seeded random draws (DomainBed's and SubpopBench's protocol,
#: :func:`gradstarve.hparams.distribution_from_spec`), setting 0 being :data:`CPU_HPARAMS`. Ranges: around the
#: from-scratch Adam recipe for the optimiser; SD's λ over 1e-3..30 per class (App. A.3 searched λ and γ; Shrestha
#: et al. 2022 chose λ = 10 for a from-scratch ResNet-18) and γ over the released ranges; Group DRO's η over
#: Sagawa et al.'s grid's span; JTT's T and λ_up over Liu et al.'s grid; LfF's q over (0.3, 0.9).
CPU_SEARCH: dict[str, dict[str, Any]] = {
    "erm": {"lr": {"log_uniform": [1e-4, 3e-3]}, "weight_decay": {"log_uniform": [1e-6, 1e-2]}},
    "sd": {
        "sd_lam": {"per_class": [{"log_uniform": [1e-3, 30.0]}, {"log_uniform": [1e-3, 30.0]}]},
        "sd_gamma": {"per_class": [{"uniform": [-1.0, 3.0]}, {"uniform": [0.0, 4.0]}]},
    },
    "sd_eq25": {"sd_lam": {"log_uniform": [1e-3, 30.0]}},
    "group_dro": {"groupdro_eta": {"log_uniform": [1e-3, 1e-1]}, "weight_decay": {"log_uniform": [1e-6, 1e-2]}},
    "lff": {"lff_q": {"uniform": [0.3, 0.9]}},
    "jtt": {
        "jtt_first_stage_epochs": {"choice": [1, 2, 3, 5]},
        "jtt_upweight": {"choice": [5.0, 10.0, 20.0, 50.0, 100.0]},
    },
}
#: ``quick=True``: what changes (over the preset's values) to finish in minutes.
QUICK_TRAIN_SIZE = 2000
QUICK_EPOCHS = 2
QUICK_CPU_RESOLUTION = 32  # the cpu preset's evaluations of val + test (9,175 images) dominate a quick run at 64 px


@dataclass(frozen=True)
class CelebASetup:
    """What to run: a seeded random search per method on one seed, then every method at its chosen setting on
    ``seeds`` (both through :mod:`gradstarve.experiments.sweep`).

    Attributes:
        preset: ``"cpu"`` or ``"paper"`` (see the module docstring).
        methods: a subset of :data:`METHODS`.
        seeds: the final table's seeds (default: 0-4; with ``quick``: 0).
        quick: a smoke test (see the module docstring).
        resolution: image side (default: the preset's, 64 or 224).
        train_size: train on a seeded random subset of this many training images (default: all; quick: 2,000).
        hparams: per-method values applied to every setting (searched or not), e.g. ``{"sd": {"epochs": 10}}``.
        pretrained_weights: a local torchvision-format ImageNet checkpoint (the paper preset's ResNet-50 only).
        evaluations_per_epoch: how often val and test are evaluated (the selection candidates).
        cache_dir: the image cache (default ``$XDG_CACHE_HOME/gradstarve/image-cache``).
        n_search: random settings per searched method besides the default (setting 0); default 8, quick 0.
        search_seed: the seed the search runs on (its runs are also that seed's final runs).
        channels_last: the model and batches in channels-last memory (1.3x faster steps here; a task option, so
            part of each run's identity).
    """

    preset: str = "cpu"
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] | None = None
    quick: bool = False
    resolution: int | None = None
    train_size: int | None = None
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pretrained_weights: str | None = None
    evaluations_per_epoch: int = 1
    cache_dir: str | None = None
    n_search: int | None = None
    search_seed: int = 0
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {list(self.methods)}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        if self.evaluations_per_epoch < 1:
            raise ValueError(f"evaluations_per_epoch must be >= 1, got {self.evaluations_per_epoch}")
        if self.n_search is not None and self.n_search < 0:
            raise ValueError(f"n_search must be >= 0, got {self.n_search}")
        extra = [m for m in self.hparams if m not in METHODS]
        if extra:
            raise ValueError(f"hparams overrides name unknown methods {extra}; known: {METHODS}")
        if "sd_margin" in self.methods and "sd" not in self.methods:
            raise ValueError("sd_margin is sd at its chosen setting with γ_0 on the margin: include sd too")

    def resolved(self) -> CelebASetup:
        """The set-up with the defaults filled in: seeds, search size, and ``quick``'s subset and resolution."""
        seeds = self.seeds if self.seeds is not None else ((0,) if self.quick else (0, 1, 2, 3, 4))
        train_size = self.train_size or (QUICK_TRAIN_SIZE if self.quick else None)
        resolution = self.resolution
        if resolution is None and self.quick and self.preset == "cpu":
            resolution = QUICK_CPU_RESOLUTION
        n_search = self.n_search if self.n_search is not None else (0 if self.quick else 8)
        return replace(self, seeds=tuple(seeds), train_size=train_size, resolution=resolution, n_search=n_search)

    @property
    def pretrained(self) -> bool:
        return self.pretrained_weights is not None

    def method_hparams(self, method: str) -> dict[str, Any]:
        """The overrides of ``hparams.py``'s defaults for ``method``'s setting 0 (preset, quick, user)."""
        overrides: dict[str, Any] = {}
        if self.preset == "cpu":
            overrides.update(CPU_COMMON)
            overrides.update(CPU_HPARAMS[method])
        else:
            overrides["pretrained"] = self.pretrained
            overrides["model"] = PRESETS[self.preset].architecture
            if method == "sd_eq25":
                overrides.update(CPU_HPARAMS["sd_eq25"])
        if method == "sd_margin":
            gamma = overrides.get("sd_gamma", default_hparams("sd", "celeba")["sd_gamma"])
            overrides["sd_gamma"] = margin_gamma(gamma)
        if self.quick:
            first_stage = int(overrides.get("jtt_first_stage_epochs", 1)) if method == "jtt" else 0
            overrides["epochs"] = first_stage + QUICK_EPOCHS
        overrides.update(self.hparams.get(method, {}))
        return overrides

    def variant(self, method: str) -> dict[str, Any]:
        """``method`` as a :class:`~gradstarve.experiments.sweep.SweepSpec` variant: setting 0 is
        :meth:`method_hparams`, draws come from :data:`CPU_SEARCH` (cpu preset), the user's ``hparams`` are fixed."""
        algorithm = ALGORITHM_OF.get(method, method)
        values = self.method_hparams(method)
        search = dict(CPU_SEARCH.get(method, {})) if self.preset == "cpu" else {}
        for name in self.hparams.get(method, {}):
            search.pop(name, None)  # a value the user fixed is not searched
        variant: dict[str, Any] = {
            "algorithm": algorithm,
            "label": LABELS[method],
            "defaults": {k: v for k, v in values.items() if k in search},
            "overrides": {k: v for k, v in values.items() if k not in search},
            "search": search,
        }
        if values.get("optimizer") == "adam" and "momentum" in default_hparams(algorithm, "celeba"):
            variant["remove"] = ["momentum"]  # read by SGD only; left in, it would read as if it were used
        return variant

    def data_options(self) -> dict[str, Any]:
        """The celeba task's options (:func:`gradstarve.experiments.tasks.load_task`), without the data root."""
        options: dict[str, Any] = {
            "preset": self.preset,
            "resolution": self.resolution or PRESETS[self.preset].resolution,
            "target": TARGET,
            "attribute": ATTRIBUTE,
            "augment": True,
        }
        if self.train_size is not None:
            options.update(train_size=int(self.train_size), data_seed=0)  # one subset for every seed
        if self.pretrained_weights is not None:
            options["pretrained_weights"] = str(self.pretrained_weights)
        if self.cache_dir is not None:
            options["cache_dir"] = str(self.cache_dir)
        if self.channels_last:
            options["channels_last"] = True
        return options

    def config(self, method: str, seed: int, n_train: int) -> RunConfig:
        """The run of ``method``'s setting 0 (no search) with ``seed`` on a training split of ``n_train`` images."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        spec = _spec(self, (method,), (seed,), 0, {method: self.variant(method)}, n_train)
        return sweep.plan(spec)[0].config


def margin_gamma(gamma: Any) -> list[float]:
    """γ of the released code's convention (the raw target logit of each class: class-0 logits pulled to +γ_0)
    turned into targets on the true-class margin: class 0's target logit becomes -γ_0 (its margin -ŷ is pulled to
    +γ_0), class 1's stays +γ_1."""
    values = [float(g) for g in gamma] if isinstance(gamma, list | tuple) else [float(gamma), float(gamma)]
    return [-values[0], *values[1:]]


def _spec(
    setup: CelebASetup,
    methods: Sequence[str],
    seeds: Sequence[int],
    n_hparams: int,
    variants: Mapping[str, Mapping[str, Any]],
    n_train: int,
) -> sweep.SweepSpec:
    # One evaluation interval for the sweep: the shortest epoch among the methods' batch sizes, so every method is
    # evaluated at least evaluations_per_epoch times an epoch (the selection candidates).
    batches = []
    for method in methods:
        variant = variants[method]
        values = {**default_hparams(variant["algorithm"], "celeba"), **variant.get("defaults", {})}
        batches.append(int({**values, **variant.get("overrides", {})}["batch_size"]))
    per_epoch = min(math.ceil(n_train / batch) for batch in batches)
    return sweep.SweepSpec(
        datasets=("celeba",),
        algorithms=tuple(methods),
        seeds=tuple(seeds),
        n_hparams=n_hparams,
        hparams_seed=0,
        data={"celeba": setup.data_options()},
        eval_every=max(1, per_epoch // setup.evaluations_per_epoch),
        eval_splits=("val", "test"),
        variants=dict(variants),
    )


def search_spec(setup: CelebASetup, n_train: int) -> sweep.SweepSpec:
    """The search: every searched method of ``setup`` at setting 0 and ``n_search`` seeded draws, on the search
    seed. Selection (:func:`choose_settings`) reads validation data only."""
    setup = setup.resolved()
    methods = [m for m in setup.methods if m in SEARCHED_METHODS]
    variants = {m: setup.variant(m) for m in methods}
    return _spec(setup, methods, (setup.search_seed,), int(setup.n_search), variants, n_train)


def final_spec(setup: CelebASetup, chosen: Mapping[str, Mapping[str, Any]], n_train: int) -> sweep.SweepSpec:
    """Every method with a chosen setting (``chosen``: method -> complete hyperparameters) on the final seeds.
    ``sd_margin`` runs ``sd``'s chosen setting with γ_0 on the margin. The search seed's runs are the search's own
    folders (same configuration, same hash)."""
    setup = setup.resolved()
    settings = dict(chosen)
    if "sd_margin" in setup.methods and "sd" in chosen:
        settings["sd_margin"] = {**chosen["sd"], "sd_gamma": margin_gamma(chosen["sd"]["sd_gamma"])}
    methods = [m for m in setup.methods if m in settings]
    variants = {}
    for method in methods:
        algorithm = ALGORITHM_OF.get(method, method)
        extra = [k for k in default_hparams(algorithm, "celeba") if k not in settings[method]]
        variants[method] = {"algorithm": algorithm, "label": LABELS[method], "overrides": dict(settings[method])}
        if extra:
            variants[method]["remove"] = extra
    return _spec(setup, methods, setup.seeds, 0, variants, n_train)


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------
@dataclass
class CelebARuns:
    """The runs of a set-up: metrics rows and run folder per finished final ``(method, seed)``, the final runs not
    finished (``missing``), steps per epoch and in all per method, group counts per split, the search's rows
    (:func:`choose_settings`) and the hyperparameters of each method's final runs (``chosen``)."""

    setup: CelebASetup
    metrics: dict[tuple[str, int], list[dict[str, Any]]]
    run_dirs: dict[tuple[str, int], Path]
    steps_per_epoch: dict[str, int]
    total_steps: dict[str, int]
    group_counts: dict[str, dict[str, int]]
    missing: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0
    search: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load_celeba_task(setup: CelebASetup, data_root: Path | str | None = None, progress: bool = False) -> Task:
    """The celeba task of ``setup``; raises :class:`DataMissingError` when no CelebA is found under ``data_root``."""
    from gradstarve.data.errors import MissingDataError

    options = {**setup.data_options(), "data_root": data_root, "progress": progress}
    try:
        return load_task("celeba", options, seed=0)
    except (MissingDataError, FileNotFoundError) as error:
        raise DataMissingError(
            f"CelebA is not available: {error} (give the folder with --data-root; e.g. --data-root ../shared/data)"
        ) from error


def _inspect(run: sweep.PlannedRun, runs_dir: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """A planned run's rows if finished, intact and finite, else ``None``; and its state in words."""
    inspection = inspect_run(Path(runs_dir) / run.folder_name, run.config)
    nonfinite = nonfinite_metrics(inspection.rows)
    if inspection.finished and not nonfinite:
        return inspection.rows, f"done, step {inspection.rows[-1]['step']}"
    if inspection.state == "damaged":
        return None, f"DAMAGED, not counted ({inspection.problem})"
    if nonfinite:
        return None, f"diverged (non-finite {', '.join(nonfinite[:3])}), not counted"
    if inspection.rows:
        return None, f"unfinished at step {inspection.rows[-1]['step']}, not counted"
    return None, "not started"


def _own_keys(method: str) -> tuple[str, ...]:
    return (*_COMMON_KEYS, "epochs", *_METHOD_KEYS.get(ALGORITHM_OF.get(method, method), ()))


def choose_settings(
    setup: CelebASetup, runs: Sequence[sweep.PlannedRun], runs_dir: Path
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Hyperparameter selection on the search seed's *validation* data: per method, the setting whose evaluation
    picked by :data:`SEARCH_RULE` (among :func:`~gradstarve.experiments.selection.candidate_rows`) has the best
    validation worst-group accuracy. A method is chosen only once all its settings have finished.

    Returns ``(chosen, rows, problems)``: method -> complete hyperparameters; one row per (method, setting) with
    the setting's own hyperparameters, its validation worst-group and average accuracy at the picked evaluation,
    its state and whether it was chosen; and one line per run that is damaged or diverged.
    """
    by_method: dict[str, list[tuple[sweep.PlannedRun, list[dict[str, Any]] | None, str]]] = {}
    problems = []
    for run in runs:
        rows, state = _inspect(run, runs_dir)
        if state.startswith(("DAMAGED", "diverged")):
            problems.append(f"{LABELS[run.method]} search setting {run.hparams_index}: {state} ({run.folder_name})")
        by_method.setdefault(run.method, []).append((run, rows, state))
    chosen: dict[str, dict[str, Any]] = {}
    table: list[dict[str, Any]] = []
    for method, entries in by_method.items():
        scores = {}
        for run, rows, _ in entries:
            candidates = selection.candidate_rows(rows) if rows else []
            if candidates:
                picked = selection.select_step(candidates, SEARCH_RULE)
                scores[run.hparams_index] = (
                    float(picked["val/worst_group_accuracy"]),
                    float(picked["val/accuracy"]),
                    picked["step"],
                )
        complete = all(rows is not None for _, rows, _ in entries)
        best = max(scores, key=lambda index: scores[index][0]) if complete and scores else None
        for run, _, state in entries:
            score = scores.get(run.hparams_index)
            line: dict[str, Any] = {"method": method, "setting": run.hparams_label}
            line.update({k: run.config.hparams[k] for k in _own_keys(method) if k in run.config.hparams})
            line["val_worst_group"] = 100 * score[0] if score else None
            line["val_average"] = 100 * score[1] if score else None
            line["step"] = score[2] if score else None
            line["state"] = state
            line["chosen"] = run.hparams_index == best
            table.append(line)
            if run.hparams_index == best:
                chosen[method] = dict(run.config.hparams)
    return chosen, table, problems


def run_celeba(
    setup: CelebASetup,
    runs_dir: Path | str,
    *,
    data_root: Path | str | None = None,
    device: str = "cpu",
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    task: Task | None = None,
    report_only: bool = False,
    specs_dir: Path | str | None = None,
    workers: int = 0,
    threads_per_run: int | None = None,
    tensorboard: bool = False,
) -> CelebARuns:
    """The search, then the final seeds of every chosen setting, through :func:`gradstarve.experiments.sweep.launch`
    into ``runs_dir`` (finished runs are skipped, killed ones resumed).

    Args:
        progress: show decoding progress when the image cache is built.
        report: called with one line of text per final run.
        task: an already loaded celeba task (else :func:`load_celeba_task`; only its sizes and counts are read).
        report_only: train nothing; read the runs already in ``runs_dir`` (the others are named, never counted).
        specs_dir: where the two sweep specs are written (``search/spec.json``, ``final/spec.json``); default the
            parent of ``runs_dir``.
        workers, threads_per_run: the sweep's local backend (``workers=0``: one run at a time in this process).
    """
    start = time.perf_counter()
    setup = setup.resolved()
    runs_dir = Path(runs_dir).absolute()
    specs_dir = Path(specs_dir) if specs_dir is not None else runs_dir.parent
    if task is None:
        task = load_celeba_task(setup, data_root, progress=progress)
    n_train = len(task.train)

    def launch(name: str, spec: sweep.SweepSpec) -> None:
        if report_only:
            return
        summary = sweep.launch(
            specs_dir / name,
            spec,
            runs_dir=runs_dir,
            workers=workers,
            threads_per_run=threads_per_run,
            data_root=data_root,
            device=device,
            tensorboard=tensorboard,
        )
        for outcome in summary.failed:
            if report is not None:
                report(f"{name} run {outcome.folder_name} {outcome.state}: {outcome.error}")

    search = search_spec(setup, n_train)
    launch("search", search)
    chosen, search_rows, problems = choose_settings(setup, sweep.plan(search), runs_dir)
    metrics_by_run: dict[tuple[str, int], list[dict[str, Any]]] = {}
    run_dirs: dict[tuple[str, int], Path] = {}
    steps_per_epoch: dict[str, int] = {}
    total: dict[str, int] = {}
    missing: list[tuple[str, int]] = []
    planned = []
    if chosen:
        final = final_spec(setup, chosen, n_train)
        launch("final", final)
        planned = sweep.plan(final)
        chosen = {run.method: dict(run.config.hparams) for run in planned}  # sd_margin included
    for run in planned:
        method, seed = run.method, run.config.seed
        steps_per_epoch[method] = math.ceil(n_train / int(run.config.hparams["batch_size"]))
        total[method] = int(run.config.hparams["epochs"]) * steps_per_epoch[method]
        rows, state = _inspect(run, runs_dir)
        if rows is not None:
            metrics_by_run[(method, seed)] = rows
            run_dirs[(method, seed)] = runs_dir / run.folder_name
        else:
            missing.append((method, seed))
            if state.startswith(("DAMAGED", "diverged")):
                problems.append(f"{LABELS[method]} seed {seed}: {state} ({run.folder_name})")
        if report is not None:
            report(f"{LABELS[method]} seed {seed}: {state} -> {runs_dir / run.folder_name}")
    unchosen = [m for m in setup.methods if m in SEARCHED_METHODS and m not in chosen]
    missing += [(m, s) for m in unchosen for s in setup.seeds]
    counts = {
        name: dict(zip(GROUP_NAMES, split.group_counts().tolist(), strict=True))
        for name, split in task.evaluation.items()
    }
    seconds = time.perf_counter() - start
    return CelebARuns(
        setup, metrics_by_run, run_dirs, steps_per_epoch, total, counts, missing, seconds, search_rows, chosen, problems
    )


# --------------------------------------------------------------------------------------------------------------
# Selection and tables (pure functions of metrics rows)
# --------------------------------------------------------------------------------------------------------------
def seed_results(
    metrics_by_run: Mapping[tuple[str, int], Sequence[Mapping[str, Any]]],
    steps_per_epoch: Mapping[str, int],
    rules: Sequence[str] = RULES,
    group_names: Sequence[str] = GROUP_NAMES,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """One row per (method, rule, seed): the selected evaluation and its test numbers (accuracies in percent).

    Columns: ``method``, ``selection``, ``seed``, ``step``, ``epoch``, ``last_step``, ``val_worst_group``,
    ``val_average``, ``test_worst_group``, ``test_average``, ``worst_group`` (its name), ``worst_group_correct``
    (k), ``worst_group_count`` (n), ``worst_group_ci_low`` / ``_high`` (Clopper-Pearson at ``confidence``, percent),
    and ``test <group>`` / ``n <group>`` per group. Runs without a selectable row are left out.
    """
    out = []
    for (method, seed), rows in metrics_by_run.items():
        candidates = selection.candidate_rows(rows)
        if not candidates:
            continue
        for rule in rules:
            row = selection.select_step(candidates, rule)
            accuracy = [np.nan if a is None else float(a) for a in row["test/group_accuracy"]]
            count = [int(c) for c in row["test/group_count"]]
            present = [g for g, c in enumerate(count) if c > 0]
            worst = min(present, key=lambda g: accuracy[g])
            correct = round(accuracy[worst] * count[worst])
            low, high = metrics.binomial_interval(correct, count[worst], confidence)
            result = {
                "method": method,
                "selection": rule,
                "seed": seed,
                "step": int(row["step"]),
                "epoch": row["step"] / steps_per_epoch[method],
                "last_step": int(rows[-1]["step"]),
                "val_worst_group": 100 * float(row["val/worst_group_accuracy"]),
                "val_average": 100 * float(row["val/accuracy"]),
                "test_worst_group": 100 * float(row["test/worst_group_accuracy"]),
                "test_average": 100 * float(row["test/accuracy"]),
                "worst_group": group_names[worst],
                "worst_group_correct": correct,
                "worst_group_count": count[worst],
                "worst_group_ci_low": 100 * low,
                "worst_group_ci_high": 100 * high,
            }
            for g, name in enumerate(group_names):
                result[f"test {name}"] = 100 * accuracy[g]
                result[f"n {name}"] = count[g]
            out.append(result)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """:func:`selection.mean_std`, with no std (``None``) for a single seed rather than a misleading 0."""
    mean, std = selection.mean_std(values)
    return mean, (std if len(values) > 1 else None)


def _paper(method: str, metric: str) -> tuple[float, float | None] | None:
    return (TABLE2.get(method) or {}).get(metric)


def table2_rows(per_seed: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Table 2: one row per (method, rule), mean ± std over seeds (std ``None`` for one seed), the paper's numbers
    and the difference in units of the paper's std (``(ours - paper) / paper std``; ``None`` where the paper gives
    no std or no number).

    ``worst_group_ci_low`` / ``_high``: the Clopper-Pearson interval of one run whose worst group (``n`` examples,
    the count of the group that is worst in most seeds) has the mean accuracy: how precisely a single run measures
    it.
    """
    keys: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in per_seed:
        keys.setdefault((row["method"], row["selection"]), []).append(row)
    out = []
    for (method, rule), rows in keys.items():
        worst_mean, worst_std = _mean_std([r["test_worst_group"] for r in rows])
        average_mean, average_std = _mean_std([r["test_average"] for r in rows])
        group = Counter(r["worst_group"] for r in rows).most_common(1)[0][0]
        n = next(r["worst_group_count"] for r in rows if r["worst_group"] == group)
        low, high = metrics.binomial_interval(round(worst_mean / 100 * n), n, confidence)
        paper_worst, paper_average = _paper(method, "worst_group"), _paper(method, "average")
        out.append(
            {
                "method": method,
                "label": LABELS.get(method, method),
                "selection": rule,
                "seeds": len(rows),
                "worst_group_mean": worst_mean,
                "worst_group_std": worst_std,
                "average_mean": average_mean,
                "average_std": average_std,
                "worst_group": group,
                "worst_group_n": n,
                "worst_group_ci_low": 100 * low,
                "worst_group_ci_high": 100 * high,
                "paper_worst_group": paper_worst[0] if paper_worst else None,
                "paper_worst_group_std": paper_worst[1] if paper_worst else None,
                "worst_group_diff_in_paper_std": difference_in_std(worst_mean, paper_worst),
                "paper_average": paper_average[0] if paper_average else None,
                "paper_average_std": paper_average[1] if paper_average else None,
                "average_diff_in_paper_std": difference_in_std(average_mean, paper_average),
                "selected_epoch_mean": float(np.mean([r["epoch"] for r in rows])),
            }
        )
    return out


def group_rows(per_seed: Sequence[Mapping[str, Any]], group_names: Sequence[str] = GROUP_NAMES) -> list[dict]:
    """Per-group test accuracy, one row per (method, rule, group): mean ± std over seeds and the group's size."""
    keys: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in per_seed:
        keys.setdefault((row["method"], row["selection"]), []).append(row)
    out = []
    for (method, rule), rows in keys.items():
        for name in group_names:
            mean, std = _mean_std([r[f"test {name}"] for r in rows])
            out.append(
                {
                    "method": method,
                    "selection": rule,
                    "group": name,
                    "n_test": rows[0][f"n {name}"],
                    "test_mean": mean,
                    "test_std": std,
                }
            )
    return out


# --------------------------------------------------------------------------------------------------------------
# Report: markdown, figure, notes
# --------------------------------------------------------------------------------------------------------------
def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    return plus_minus(mean, std, digits)


def _std_units(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def table2_display(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Table 2 for a reader: ours beside the paper's, in percent, with the difference in paper-std units."""
    display = []
    for row in rows:
        display.append(
            {
                "method": row["label"],
                "selection": row["selection"],
                "seeds": row["seeds"],
                "worst-group % (ours)": _pm(row["worst_group_mean"], row["worst_group_std"]),
                "95% CI, one run": f"[{row['worst_group_ci_low']:.1f}, {row['worst_group_ci_high']:.1f}] "
                f"(n = {row['worst_group_n']}, {row['worst_group']})",
                "worst-group % (paper)": _pm(row["paper_worst_group"], row["paper_worst_group_std"]),
                "Δ worst (paper std)": _std_units(row["worst_group_diff_in_paper_std"]),
                "average % (ours)": _pm(row["average_mean"], row["average_std"]),
                "average % (paper)": _pm(row["paper_average"], row["paper_average_std"]),
                "Δ average (paper std)": _std_units(row["average_diff_in_paper_std"]),
                "epoch": f"{row['selected_epoch_mean']:.1f}",
            }
        )
    return display


def table2_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 2 as markdown (:func:`table2_display`)."""
    return markdown_table(table2_display(rows))


def groups_display(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Per-group test accuracy (mean ± std, percent) for a reader, one line per (method, rule), one column per
    group."""
    lines: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        line = lines.setdefault(
            (row["method"], row["selection"]),
            {"method": LABELS.get(row["method"], row["method"]), "selection": row["selection"]},
        )
        line[f"{row['group']} (n = {row['n_test']})"] = _pm(row["test_mean"], row["test_std"], 1)
    return list(lines.values())


def groups_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per-group test accuracy as markdown (:func:`groups_display`)."""
    return markdown_table(groups_display(rows))


def plot_groups(
    per_seed: Sequence[Mapping[str, Any]],
    rules: Sequence[str] = RULES,
    group_names: Sequence[str] = GROUP_NAMES,
    confidence: float = 0.95,
) -> Figure:
    """Per-group test accuracy per method (bars: mean over seeds; dots: seeds; error bars: Clopper-Pearson interval
    of one run at the mean accuracy), one panel per selection rule."""
    methods = list(dict.fromkeys(row["method"] for row in per_seed))
    figure = Figure(figsize=(5.2 * len(rules), 4.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(rules), sharey=True))
    width = 0.8 / max(1, len(methods))
    for ax, rule in zip(axes, rules, strict=True):
        for m, method in enumerate(methods):
            rows = [r for r in per_seed if r["method"] == method and r["selection"] == rule]
            if not rows:
                continue
            positions = np.arange(len(group_names)) + (m - (len(methods) - 1) / 2) * width
            means, lows, highs = [], [], []
            for name in group_names:
                values = [r[f"test {name}"] for r in rows]
                n = rows[0][f"n {name}"]
                mean = float(np.nanmean(values))
                low, high = metrics.binomial_interval(round(mean / 100 * n), n, confidence) if n else (0.0, 0.0)
                means.append(mean)
                lows.append(mean - 100 * low)
                highs.append(100 * high - mean)
            ax.bar(positions, means, width, color=f"C{m}", alpha=0.75, label=LABELS.get(method, method))
            ax.errorbar(positions, means, yerr=[lows, highs], fmt="none", ecolor="k", capsize=2, lw=0.8)
            for g, name in enumerate(group_names):
                ax.plot([positions[g]] * len(rows), [r[f"test {name}"] for r in rows], "k.", ms=3)
        counts = [per_seed[0][f"n {name}"] for name in group_names] if per_seed else [0] * len(group_names)
        ticks = [f"{g}\n(n = {n})" for g, n in zip(group_names, counts, strict=True)]
        ax.set_xticks(np.arange(len(group_names)), ticks)
        ax.set_title(f"selected by {rule.replace('_', ' ')}", fontsize=10)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", ls="--", lw=0.5, alpha=0.4)
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=max(1, len(methods)), fontsize=8)
    figure.suptitle(
        f"CelebA ({TARGET} vs {ATTRIBUTE}): per-group test accuracy; bars {int(confidence * 100)}% Clopper-Pearson "
        "(one run at the mean); dots: seeds",
        fontsize=10,
    )
    return figure


_METHOD_KEYS = {
    "sd": ("sd_lam", "sd_gamma"),
    "group_dro": ("groupdro_eta",),
    "lff": ("lff_q", "lff_ema"),
    "jtt": ("jtt_first_stage_epochs", "jtt_upweight"),
}
_COMMON_KEYS = ("optimizer", "lr", "weight_decay", "batch_size")


def describe_hparams(hparams_by_method: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: the optimiser settings (once if shared), then each method's epochs and own values."""
    from gradstarve.hparams import describe

    def common(method: str) -> str:
        return ", ".join(f"{k} {describe(hparams_by_method[method][k])}" for k in _COMMON_KEYS)

    shared = {common(m) for m in hparams_by_method}
    parts = [f"{common(next(iter(hparams_by_method)))} for every method"] if len(shared) == 1 else []
    for method, hparams in hparams_by_method.items():
        own = [f"{k} {describe(hparams[k])}" for k in ("epochs", *_METHOD_KEYS.get(method, ())) if k in hparams]
        if len(shared) > 1:
            own.insert(0, common(method))
        if own:
            parts.append(f"{LABELS[method]}: {', '.join(own)}")
    return "; ".join(parts)


def celeba_notes(
    setup: CelebASetup,
    table: Sequence[Mapping[str, Any]],
    group_counts: Mapping[str, Mapping[str, int]],
    hparams_by_method: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """The caveats a reader of the table must know: data, model, pretraining, hyperparameters, seeds, selection,
    and how wide the worst group's confidence interval is."""
    setup = setup.resolved()
    preset = PRESETS[setup.preset]
    resolution = setup.resolution or preset.resolution
    train = group_counts.get("train", {})
    rare = train.get(GROUP_NAMES[3], 0)
    where = "the cpu preset's, chosen for training from scratch on 2 cores" if setup.preset == "cpu" else "the paper's"
    notes = [
        f"Data: the CelebA copy used here has {sum(train.values()):,} training images with {rare:,} blond males "
        "(the full CelebA used by the paper: 162,770 and 1,387); validation and test are the official splits' "
        "images present in the copy. Numbers are not directly comparable with the paper's.",
        f"Model: {preset.description}"
        + (f", at {resolution} x {resolution}" if resolution != preset.resolution else "")
        + " (paper: ResNet-50 at 224 x 224).",
        "Pretraining: "
        + (
            f"ImageNet weights from {setup.pretrained_weights}."
            if setup.pretrained
            else "none: trained from scratch (no ImageNet weights are available offline here); the paper starts "
            "from an ImageNet-pretrained ResNet-50 (Sagawa et al.'s set-up)."
        ),
        f"Hyperparameters ({where}): {describe_hparams(hparams_by_method)}.",
        f"Seeds: {len(setup.seeds)} per method (the paper: {PAPER_RUNS}); ± is the std over seeds (ddof = 0).",
        "Selection: both rules are reported; the paper selects by the best average validation accuracy "
        "(average_validation). LfF's number in the paper is Nam et al.'s (ResNet-18, no average reported); JTT is "
        "not in the paper's Table 2.",
    ]
    rule = PAPER_SELECTION if any(row["selection"] == PAPER_SELECTION for row in table) else table[0]["selection"]
    shown = [row for row in table if row["selection"] == rule]
    if shown:
        intervals = ", ".join(
            f"{row['label']} {row['worst_group_mean']:.1f}% [{row['worst_group_ci_low']:.1f}, "
            f"{row['worst_group_ci_high']:.1f}] (n = {row['worst_group_n']}, {row['worst_group']})"
            for row in shown
        )
        widest = max((row["worst_group_ci_high"] - row["worst_group_ci_low"]) / 2 for row in shown)
        notes.append(
            f"Uncertainty: one run's worst-group accuracy is a proportion over a small test group; 95% "
            f"Clopper-Pearson intervals at the mean ({rule}): {intervals}. Up to ±{widest:.0f} points, against "
            "paper stds of 1-2 points: differences in paper-std units are only indicative."
        )
    if setup.quick:
        notes.insert(0, "QUICK RUN: a smoke test (one seed, a training subset, 2 epochs); the numbers mean nothing.")
    return notes


def hparam_rows(hparams_by_method: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: the complete hyperparameters of its final runs (JSON-ish text)."""
    rows = [{"method": method, **{k: str(v) for k, v in h.items()}} for method, h in hparams_by_method.items()]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k, "") for k in keys} for row in rows]


def verdict_rows(
    per_seed: Sequence[Mapping[str, Any]], methods: Sequence[str] = ("sd", "sd_eq25", "sd_margin")
) -> list[dict[str, Any]]:
    """SD minus ERM, paired by seed, per SD form and selection rule: the mean difference in test worst-group and
    average accuracy (points) with a 95 % Student-t interval over the seeds (none for one seed)."""
    from scipy import stats

    by_key = {(r["method"], r["selection"], r["seed"]): r for r in per_seed}
    out = []
    for rule in RULES:
        for method in methods:
            seeds = sorted(s for (m, r, s) in by_key if m == method and r == rule and ("erm", rule, s) in by_key)
            if not seeds:
                continue
            row: dict[str, Any] = {"method": method, "label": LABELS[method], "selection": rule, "seeds": len(seeds)}
            for metric in ("test_worst_group", "test_average"):
                d = np.array([by_key[(method, rule, s)][metric] - by_key[("erm", rule, s)][metric] for s in seeds])
                half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
                row[f"{metric}_diff"] = float(d.mean())
                row[f"{metric}_ci_low"] = None if half is None else float(d.mean() - half)
                row[f"{metric}_ci_high"] = None if half is None else float(d.mean() + half)
            out.append(row)
    return out


def verdict_text(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per (SD form, rule): the paired difference and whether it supports the paper's claim that SD
    raises the worst group well above ERM's (83.2 vs 40.4 %, Table 2)."""
    lines = []
    for row in rows:
        low, high = row["test_worst_group_ci_low"], row["test_worst_group_ci_high"]
        interval = "" if low is None else f" [{low:+.1f}, {high:+.1f}]"
        if low is None:
            verdict = "one seed: no interval, no verdict"
        elif low > 0:
            verdict = "SD helps here (the interval is above 0)"
        elif high < 0:
            verdict = "SD hurts here (the interval is below 0): the paper's claim does not hold in this set-up"
        else:
            verdict = "no detectable difference (the interval covers 0): the paper's claim is not reproduced here"
        lines.append(
            f"{row['label']} minus ERM, worst-group test accuracy, {row['selection']}: "
            f"{row['test_worst_group_diff']:+.1f} points{interval} over {row['seeds']} paired seeds "
            f"(average accuracy {row['test_average_diff']:+.1f}); {verdict}."
        )
    return lines


def search_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The search table: one line per (method, setting), its own hyperparameters, validation worst-group and
    average accuracy at the evaluation :data:`SEARCH_RULE` picks, and the chosen setting marked."""

    def show(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = []
    for row in rows:
        own = {k: v for k, v in row.items() if k in _own_keys(row["method"]) and k not in ("optimizer", "batch_size")}
        lines.append(
            {
                "method": LABELS.get(row["method"], row["method"]),
                "setting": row["setting"],
                "hyperparameters": ", ".join(f"{k} {show(v)}" for k, v in own.items()),
                "val worst-group %": "" if row["val_worst_group"] is None else f"{row['val_worst_group']:.1f}",
                "val average %": "" if row["val_average"] is None else f"{row['val_average']:.1f}",
                "picked step": "" if row["step"] is None else str(row["step"]),
                "state": row["state"],
                "chosen": "**chosen**" if row["chosen"] else "",
            }
        )
    return markdown_table(lines) if lines else "(no search runs)"


def write_celeba(
    out_dir: Path | str,
    setup: CelebASetup | None = None,
    *,
    runs_dir: Path | str | None = None,
    data_root: Path | str | None = None,
    device: str = "cpu",
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    task: Task | None = None,
    report_only: bool = False,
    workers: int = 0,
    threads_per_run: int | None = None,
    tensorboard: bool = False,
) -> Reproduction:
    """Run (or resume) the search and the final seeds and write ``search.md`` (+ ``.csv``), ``table2.md``,
    ``table2.{csv,json}``, ``table2_groups.{csv,json}``, ``table2_seeds.{csv,json}``, ``table2_hparams.{csv,json}``,
    ``table2_verdict.{csv,json}`` and ``table2_groups.{png,pdf}`` into ``out_dir``.

    Raises:
        DataMissingError: no CelebA under ``data_root``.
    """
    start = time.perf_counter()
    setup = (setup or CelebASetup()).resolved()
    out_dir = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir is not None else out_dir / "runs"
    runs = run_celeba(
        setup,
        runs_dir,
        data_root=data_root,
        device=device,
        progress=progress,
        report=report,
        task=task,
        report_only=report_only,
        specs_dir=out_dir,
        workers=workers,
        threads_per_run=threads_per_run,
        tensorboard=tensorboard,
    )
    search_text = (
        f"# CelebA hyperparameter search (seed {setup.search_seed}, selected by {SEARCH_RULE} on validation data)"
        f"\n\n{search_markdown(runs.search)}\n"
    )
    files = save_text(search_text, out_dir, "search.md")
    if runs.search:
        pd.DataFrame(runs.search).to_csv(out_dir / "search.csv", index=False)
        files.append(out_dir / "search.csv")
    per_seed = seed_results(runs.metrics, runs.steps_per_epoch)
    if not per_seed:
        waiting = sorted({LABELS[m] for m, _ in runs.missing})
        raise ValueError(
            "no final run has finished yet (" + ", ".join(waiting) + "); the search so far is in "
            f"{out_dir / 'search.md'}. Launch without --report-only to train"
        )
    table = table2_rows(per_seed)
    groups = group_rows(per_seed)
    configs = {m: h for m, h in runs.chosen.items() if any(key[0] == m for key in runs.metrics)}
    hparams = hparam_rows(configs)
    verdict = verdict_rows(per_seed)
    notes = celeba_notes(setup, table, runs.group_counts, configs)
    notes += verdict_text(verdict)
    if runs.missing:
        listing = "; ".join(f"{LABELS[m]} seed {s}" for m, s in runs.missing)
        notes.insert(0, f"INCOMPLETE: final runs not finished, not counted: {listing}.")
    notes += [f"Not counted: {problem}" for problem in runs.problems]

    files += save_table(table, out_dir, "table2")
    if verdict:
        files += save_table(verdict, out_dir, "table2_verdict")
    files += save_table(groups, out_dir, "table2_groups")
    files += save_table(per_seed, out_dir, "table2_seeds")
    files += save_table(hparams, out_dir, "table2_hparams")
    figures = save_figure(plot_groups(per_seed), out_dir, "table2_groups")
    files += figures
    title = f"Table 2: CelebA ({TARGET} vs {ATTRIBUTE}), worst-group and average test accuracy"
    count_table = markdown_table(
        [{"split": split, **{g: f"{c:,}" for g, c in counts.items()}} for split, counts in runs.group_counts.items()]
    )
    text = "\n\n".join(
        [
            f"# {title}",
            f"Preset `{setup.preset}`, methods {', '.join(setup.methods)}, seeds {list(setup.seeds)}. Accuracies in "
            "percent; Δ = (ours - paper) / paper std.",
            table2_markdown(table),
            "## Per-group test accuracy (mean ± std over seeds)",
            groups_markdown(groups),
            "## Group counts",
            count_table,
            "## Notes",
            "\n".join(f"- {note}" for note in notes),
            "## Hyperparameters",
            markdown_table(hparams),
        ]
    )
    files += save_text(text + "\n", out_dir, "table2.md")
    return Reproduction(
        name="celeba",
        title=title,
        tables={
            "Table 2 (ours beside the paper)": pd.DataFrame(table2_display(table)),
            "per-group test accuracy": pd.DataFrame(groups_display(groups)),
        },
        data={
            "table2": pd.DataFrame(table),
            "groups": pd.DataFrame(groups),
            "seeds": pd.DataFrame(per_seed),
            "hparams": pd.DataFrame(hparams),
            "verdict": pd.DataFrame(verdict),
            "search": pd.DataFrame(runs.search),
        },
        figures=[path for path in figures if path.suffix == ".png"],
        notes=notes,
        seconds=time.perf_counter() - start,
        files=files,
        evidence=evidence(
            quick=setup.quick,
            sigmas=[row["worst_group_diff_in_paper_std"] for row in table if row["selection"] == "average_validation"],
            what="worst-group test accuracy, the paper's average-validation rule",
        ),
    )


def reproduce(out_dir: Path | str, *, quick: bool = False, data_root: Path | str | None = None) -> Reproduction:
    """The registry's entry point (``gradstarve reproduce``): Table 2 on the CPU preset, ``--quick`` for a smoke run."""
    return write_celeba(out_dir, CelebASetup(quick=quick), data_root=data_root)

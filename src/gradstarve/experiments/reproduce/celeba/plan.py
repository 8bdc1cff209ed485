"""What Table 2 runs: the methods, the cpu preset's hyperparameters and search spaces, :class:`CelebASetup`, and
the two sweep specs (the search on one seed, then the final seeds) that :mod:`.runs` launches."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gradstarve.data.celeba import celeba_group_names
from gradstarve.experiments import sweep
from gradstarve.experiments.runs import RunConfig
from gradstarve.hparams import CELEBA_CPU_COMMON as CPU_COMMON
from gradstarve.hparams import CELEBA_CPU_HPARAMS as CPU_HPARAMS
from gradstarve.hparams import CELEBA_CPU_SEARCH as CPU_SEARCH
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


_METHOD_KEYS = {
    "sd": ("sd_lam", "sd_gamma"),
    "group_dro": ("groupdro_eta",),
    "lff": ("lff_q", "lff_ema"),
    "jtt": ("jtt_first_stage_epochs", "jtt_upweight"),
}


_COMMON_KEYS = ("optimizer", "lr", "weight_decay", "batch_size")

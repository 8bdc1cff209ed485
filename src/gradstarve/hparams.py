"""Hyperparameters of every (algorithm, dataset) pair: one table of defaults and seeded random-search spaces.

``default_hparams(algorithm, dataset)`` gives the settings used to reproduce the paper; ``random_hparams(algorithm,
dataset, seed)`` draws a point of the search space (DomainBed style: each hyperparameter has its own generator,
seeded from ``(seed, name)``, so a given seed draws the same learning rate for every algorithm and adding a
hyperparameter does not shift the others). ``hparam_specs`` returns the table rows: default, search distribution,
meaning and source. ``gradstarve hparams ALGORITHM DATASET`` prints them.

Sources are cited per value: "paper" (Pezeshki et al. 2021, with section), "released code"
(github.com/mpezeshki/Gradient_Starvation), or the method's own paper / reference code.

Keys
----
* Read by every algorithm (:mod:`gradstarve.algorithms.base`): ``optimizer``, ``lr``, ``weight_decay`` (torch's
  coupled L2, the gradient of ``wd/2 ‖θ‖²``; theory ``lam = n · wd`` for a mean loss over ``n`` examples),
  ``momentum`` (SGD only), ``l2_weight`` (``c · Σ ‖θ‖²`` inside the loss, as the IRM reference code).
* Per method: ``sd_*``, ``irm_*``, ``vrex_*``, ``rescale_loss``, ``reset_optimizer_at_anneal``, ``groupdro_eta``,
  ``lff_*``, ``seed`` (LfF's biased network), ``jtt_*``.
* Read by the trainer only: ``batch_size`` (``None`` = full batch), the training length -- ``steps`` for the
  full-batch data sets, ``epochs`` for CelebA -- and the model: ``model`` (``"mlp"``, ``"resnet50"``, ...),
  ``hidden``, ``activation``, ``init``, ``pretrained``.

Spectral Decoupling's ``sd_lam`` is the λ of Eq. 25 with both terms averaged over examples; the released code's
``sd_coef`` (written without the 1/2) is ``λ/2``, so every released coefficient appears doubled here.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

ALGORITHM_NAMES: tuple[str, ...] = ("erm", "sd", "irm", "vrex", "group_dro", "lff", "jtt")
DATASETS: tuple[str, ...] = ("two-moons", "colored-mnist", "celeba", "synthetic")

_RELEASED = "released code"
_DOMAINBED = "DomainBed (Gulrajani & Lopez-Paz 2021) default and search range"


# --------------------------------------------------------------------------------------------------------------
# Search distributions
# --------------------------------------------------------------------------------------------------------------
class Distribution(Protocol):
    def sample(self, rng: np.random.Generator) -> Any: ...


@dataclass(frozen=True)
class Fixed:
    """Not searched: always ``value``."""

    value: Any

    def sample(self, rng: np.random.Generator) -> Any:
        return copy.deepcopy(self.value)

    def __str__(self) -> str:
        return f"fixed {_show(self.value)}"


@dataclass(frozen=True)
class LogUniform:
    """``10 ** U(log10 low, log10 high)``."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """``U(low, high)``."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntLogUniform:
    """``int(10 ** U(log10 low, log10 high))`` (DomainBed's anneal-step distribution)."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def __str__(self) -> str:
        return f"int log-uniform [{self.low}, {self.high})"


@dataclass(frozen=True)
class IntUniform:
    """A uniform integer in ``[low, high]``."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def __str__(self) -> str:
        return f"integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of ``options``, uniformly."""

    options: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return copy.deepcopy(self.options[int(rng.integers(len(self.options)))])

    def __str__(self) -> str:
        return "one of {" + ", ".join(_show(option) for option in self.options) + "}"


@dataclass(frozen=True)
class PerClass:
    """A list with one independent draw per class."""

    distributions: tuple[Distribution, ...]

    def sample(self, rng: np.random.Generator) -> list[Any]:
        return [distribution.sample(rng) for distribution in self.distributions]

    def __str__(self) -> str:
        return "per class: " + "; ".join(f"class {c}: {d}" for c, d in enumerate(self.distributions))


@dataclass(frozen=True)
class Widths:
    """``layers`` equal hidden widths ``int(2 ** U(low_exp, high_exp))`` (the IRM reference search)."""

    low_exp: float
    high_exp: float
    layers: int

    def sample(self, rng: np.random.Generator) -> list[int]:
        return [int(2 ** rng.uniform(self.low_exp, self.high_exp))] * self.layers

    def __str__(self) -> str:
        return f"{self.layers} x int(2^U({self.low_exp:g}, {self.high_exp:g}))"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, float | str) else str(value)


@dataclass(frozen=True)
class HParam:
    """One row of the table: default value, random-search distribution, meaning and where the default comes from."""

    default: Any
    search: Distribution
    doc: str
    source: str = ""


#: An override row that removes a hyperparameter (e.g. ``momentum`` where a method switches to Adam).
_DROP = HParam(None, Fixed(None), "removed")


def _fixed(value: Any, doc: str, source: str = "") -> HParam:
    return HParam(value, Fixed(value), doc, source)


# --------------------------------------------------------------------------------------------------------------
# The table: data-set base rows, algorithm rows, then (algorithm, data set) overrides
# --------------------------------------------------------------------------------------------------------------
_LR = "learning rate"
_WD = "torch optimizer weight_decay (adds wd·θ to the gradient: the gradient of wd/2 ‖θ‖²)"
_L2 = "coefficient c of c · Σ‖θ‖² added to the loss (rescaled with it by IRM / V-REx)"
_FULL = "examples per step; None = full batch"


#: Rows of data sets registered by users (:func:`register_dataset`): name -> hyperparameter rows.
_REGISTERED: dict[str, dict[str, HParam]] = {}


def register_dataset(name: str, defaults: Mapping[str, Any] | None = None, *, source: str = "") -> None:
    """Give a user's data set (registered with :func:`gradstarve.experiments.tasks.register_task`) a row of the
    table: the synthetic row's defaults (Adam, lr 1e-3, full batch, an MLP) with ``defaults`` over them. A value may
    be an :class:`HParam` (default, search distribution, meaning, source) or a plain value (fixed, not searched)."""
    if name in DATASETS:
        raise ValueError(f"{name!r} is a built-in data set; register your data under another name")
    base = _dataset_rows("synthetic")
    base["hidden"] = _fixed([300, 300], "hidden widths (registered tasks' default MLP)")
    base["steps"] = _fixed(1000, "full-batch steps (registered tasks' default)")
    for key, value in (defaults or {}).items():
        base[key] = value if isinstance(value, HParam) else _fixed(value, "set when the task was registered", source)
    _REGISTERED[name] = base


def dataset_names() -> tuple[str, ...]:
    """The built-in data sets and those registered in this process."""
    return DATASETS + tuple(name for name in _REGISTERED if name not in DATASETS)


def _dataset_rows(dataset: str) -> dict[str, HParam]:
    if dataset in _REGISTERED:
        return dict(_REGISTERED[dataset])
    if dataset == "two-moons":
        source = "paper App. A.1 and released code (Figure_2/moon_fig_2.py)"
        return {
            "optimizer": _fixed("sgd", "optimizer", source),
            "lr": HParam(1e-2, LogUniform(1e-3, 1e-1), _LR, source),
            "momentum": _fixed(0.9, "SGD momentum", source),
            "weight_decay": HParam(
                2e-4,
                LogUniform(1e-5, 1e-2),
                _WD + "; with the mean loss over n = 300 points this is Eq. 9 with theory lam = n · wd",
                source,
            ),
            "l2_weight": _fixed(0.0, _L2),
            "batch_size": _fixed(None, _FULL, source),
            "steps": _fixed(10_000, "full-batch steps", source),
            "model": _fixed("mlp", "architecture", source),
            "hidden": _fixed([500], "hidden widths (2-500-1 ReLU network)", source),
            "activation": _fixed("relu", "hidden activation", source),
            "init": _fixed("default", "PyTorch's default initialisation", source),
        }
    if dataset == "colored-mnist":
        source = "paper Table 3 and released code (Figure_4_and_table_1/table_1.sh), ERM row"
        return {
            "optimizer": _fixed("adam", "optimizer (full-batch Adam)", source),
            "lr": HParam(1e-4, LogUniform(1e-5, 10**-2.5), _LR, source),
            "weight_decay": _fixed(0.0, _WD + "; Colored MNIST methods use l2_weight, as the reference code"),
            "l2_weight": _fixed(0.0, _L2 + "; the released ERM loss has no L2 term", source),
            "batch_size": _fixed(None, _FULL + " (50,000 examples in 2 environments)", source),
            "steps": _fixed(1001, "full-batch steps", source),
            "model": _fixed("mlp", "architecture: 2·14·14 -> hidden -> 1", source),
            "hidden": _fixed([300, 300], "hidden widths", source),
            "activation": _fixed("relu", "hidden activation", source),
            "init": _fixed("xavier", "Xavier-uniform weights, zero biases", source),
        }
    if dataset == "celeba":
        source = "released code (Table_2/table_2.sh, run_expt.py defaults), ERM rows"
        return {
            "optimizer": _fixed("sgd", "optimizer (SGD, momentum 0.9, as Sagawa et al.'s train.py)", source),
            "lr": HParam(1e-5, Choice((1e-5, 1e-4, 1e-3)), _LR + "; search: Sagawa et al.'s grid", source),
            "momentum": _fixed(0.9, "SGD momentum", source),
            "weight_decay": HParam(0.0, Choice((0.0, 1e-4, 0.1, 1.0)), _WD, source),
            "l2_weight": _fixed(0.0, _L2),
            "batch_size": HParam(128, Choice((64, 128, 256)), "examples per step", source),
            "epochs": _fixed(3, "training epochs (run_expt.py default n_epochs = 3); select by validation", source),
            "model": _fixed("resnet50", "architecture, one output logit", source),
            "pretrained": _fixed(True, "ImageNet-pretrained weights (Sagawa et al.'s set-up)", source),
        }
    return {  # synthetic: the tiny problems of the test suite
        "optimizer": _fixed("adam", "optimizer"),
        "lr": HParam(1e-2, LogUniform(1e-3, 1e-1), _LR),
        "weight_decay": HParam(0.0, LogUniform(1e-6, 1e-2), _WD),
        "l2_weight": _fixed(0.0, _L2),
        "batch_size": _fixed(None, _FULL),
        "steps": _fixed(20, "full-batch steps"),
        "model": _fixed("mlp", "architecture"),
        "hidden": _fixed([16], "hidden widths"),
        "activation": _fixed("relu", "hidden activation"),
        "init": _fixed("default", "initialisation"),
    }


def _algorithm_rows(algorithm: str) -> dict[str, HParam]:
    anneal = {
        "rescale_loss": _fixed(
            True, "divide the whole loss by the penalty weight when it exceeds 1", "IRM / V-REx reference code"
        ),
        "reset_optimizer_at_anneal": _fixed(
            True,
            "rebuild the optimizer when the penalty anneals in (DomainBed; the IRM and V-REx reference code and the "
            "paper's released code do not)",
            "DomainBed",
        ),
    }
    if algorithm == "sd":
        return {
            "sd_lam": HParam(0.2, LogUniform(2e-5, 0.2), "λ of Eq. 25 (mean-normalised; = 2 · sd_coef)", _DOMAINBED),
            "sd_gamma": _fixed(0.0, "γ of Eq. 28 (target logit)"),
            "sd_schedule": _fixed("constant", "penalty schedule: constant, step, linear or paper_released"),
            "sd_anneal_steps": _fixed(0, "steps before the penalty is fully on (see sd_schedule)"),
        }
    if algorithm == "irm":
        return {
            "irm_lambda": HParam(100.0, LogUniform(0.1, 1e5), "IRMv1 penalty weight after annealing", _DOMAINBED),
            "irm_lambda_before": _fixed(1.0, "penalty weight before annealing", "IRM reference code"),
            "irm_anneal_steps": HParam(500, IntLogUniform(1, 10_000), "steps before the full penalty", _DOMAINBED),
            **anneal,
        }
    if algorithm == "vrex":
        return {
            "vrex_lambda": HParam(10.0, LogUniform(0.1, 1e5), "weight of Var_e(R_e) after annealing", _DOMAINBED),
            "vrex_lambda_before": _fixed(1.0, "penalty weight before annealing", "DomainBed"),
            "vrex_anneal_steps": HParam(500, IntLogUniform(1, 10_000), "steps before the full penalty", _DOMAINBED),
            **anneal,
        }
    if algorithm == "group_dro":
        return {"groupdro_eta": HParam(1e-2, LogUniform(1e-3, 1e-1), "step size η_q of the group weights", _DOMAINBED)}
    if algorithm == "lff":
        source = "Nam et al. 2020 (reference code)"
        return {
            "lff_q": HParam(0.7, Uniform(0.3, 0.9), "q of the generalized cross-entropy", source),
            "lff_ema": HParam(0.7, Uniform(0.5, 0.99), "decay of the per-example loss averages", source),
            "seed": _fixed(0, "seed of the biased network's initialisation (trainers set it from the run seed)"),
        }
    if algorithm == "jtt":
        source = "Liu et al. 2021 (CelebA values)"
        return {
            "jtt_upweight": HParam(50.0, Choice((5.0, 20.0, 50.0, 100.0)), "λ_up, weight of the error set", source),
            "jtt_first_stage_epochs": HParam(1, Choice((1, 2, 5, 10)), "T, epochs of the identification stage", source),
            "jtt_reset_model": _fixed(True, "train the final model from the initial parameters", "Liu et al. 2021"),
        }
    return {}


def _override_rows(algorithm: str, dataset: str) -> dict[str, HParam]:
    key = (algorithm, dataset)
    if key == ("sd", "two-moons"):
        return {
            "sd_lam": HParam(
                0.006,
                LogUniform(1e-4, 1e-1),
                "λ of Eq. 25 (released sp_coef = 0.003 on mean(ŷ²); weight decay 2e-4 stays on)",
                "released code (Figure_2/moon_fig_2.py)",
            )
        }
    if key == ("sd", "colored-mnist"):
        source = "paper Table 3 and released code (table_1.sh, SD row)"
        return {
            "steps": _fixed(2001, "full-batch steps", source),
            "sd_lam": HParam(4e-5, LogUniform(1e-6, 1e-2), "λ of Eq. 25 (released sd_coef = 2e-5)", source),
            "sd_schedule": HParam(
                "paper_released",
                Choice(("paper_released", "step", "linear")),
                "the released schedule: nll + sd_coef·mean(ŷ²) before step 450 (≈ ERM), sd_coef·(mean(ŷ²) + nll) "
                "after (the direction of Eq. 25 with λ = 2; Adam undoes most of the scale; see "
                "gradstarve.losses.sd_schedule)",
                source,
            ),
            "sd_anneal_steps": HParam(450, IntUniform(0, 1000), "anneal / warm-up steps", source),
        }
    if key == ("sd", "celeba"):
        source = "paper Sec. 4 and App. A.3"
        return {
            "optimizer": _fixed("adam", "optimizer", source),
            "momentum": _DROP,
            "lr": HParam(1e-4, LogUniform(1e-5, 1e-3), _LR + " (released table_2.sh: 1e-5)", source),
            "weight_decay": _fixed(0.0, _WD, "released code"),
            "batch_size": _fixed(128, "examples per step", source),
            "sd_lam": HParam(
                [0.088, 0.012],
                PerClass((LogUniform(1e-3, 1.0), LogUniform(1e-3, 1.0))),
                "per-class λ_c of Eq. 28, class-mean normalised as the released code (its sp = λ_c/2; released "
                "table_2.sh runs sp = 0.1 for both classes)",
                source,
            ),
            "sd_gamma": HParam(
                [0.44, 2.5],
                PerClass((Uniform(-1.0, 3.0), Uniform(0.0, 4.0))),
                "per-class γ_c of Eq. 28, the raw target logit (class-0 logits are pulled toward +0.44)",
                source,
            ),
        }
    if key == ("irm", "colored-mnist"):
        source = "paper Table 3 = IRM reference code (Arjovsky et al. 2019); search: its 50-trial random search"
        return {
            "hidden": HParam([390, 390], Widths(6, 9, 2), "hidden widths", source),
            "lr": HParam(0.0004898536566546834, LogUniform(10**-3.5, 10**-2.5), _LR, source),
            "l2_weight": HParam(0.00110794568, LogUniform(1e-5, 1e-2), _L2, source),
            "irm_lambda": HParam(91257.18613115903, LogUniform(1e2, 1e6), "IRMv1 penalty weight", source),
            "irm_anneal_steps": HParam(190, IntUniform(50, 249), "steps with penalty weight 1", source),
            "steps": HParam(501, Choice((101, 201, 301, 401, 501)), "full-batch steps", source),
        }
    if key == ("vrex", "colored-mnist"):
        source = (
            "V-REx reference code defaults (capybaralet/REx_code_release, colored_mnist/main.py), converted: it "
            "minimises R1 + R2 + l2·‖θ‖² + c·(R1 - R2)² = 2·(mean R + l2/2·‖θ‖² + 2c·Var R), c = 1e4 (1 before "
            "annealing), l2 = 1e-3; search: the IRM reference ranges"
        )
        return {
            "hidden": HParam([256, 256], Widths(6, 9, 2), "hidden widths", source),
            "lr": HParam(1e-3, LogUniform(10**-3.5, 10**-2.5), _LR, source),
            "l2_weight": HParam(5e-4, LogUniform(5e-6, 5e-3), _L2 + " (= l2/2)", source),
            "vrex_lambda": HParam(2e4, LogUniform(2e2, 2e6), "weight of Var_e(R_e) (= 2c)", source),
            "vrex_lambda_before": _fixed(2.0, "weight before annealing (= 2 · 1)", source),
            "vrex_anneal_steps": HParam(100, IntUniform(50, 249), "steps with the small weight", source),
            "steps": HParam(501, Choice((101, 201, 301, 401, 501)), "full-batch steps", source),
        }
    if key == ("group_dro", "celeba"):
        source = "Sagawa et al. 2020 (CelebA, strong L2)"
        return {
            "weight_decay": HParam(0.1, Choice((1e-4, 0.1, 1.0)), _WD, source),
            "epochs": _fixed(50, "training epochs; select by worst-group validation accuracy", source),
            "groupdro_eta": HParam(0.01, LogUniform(1e-3, 1e-1), "step size η_q of the group weights", source),
        }
    if key == ("lff", "celeba"):
        source = "Nam et al. 2020 reference code (config.py, celeba)"
        return {
            "optimizer": _fixed("adam", "optimizer", source),
            "momentum": _DROP,
            "lr": HParam(1e-4, LogUniform(1e-5, 1e-3), _LR, source),
            "weight_decay": HParam(1e-4, LogUniform(1e-5, 1e-2), _WD, source),
            "batch_size": _fixed(256, "examples per step", source),
            "epochs": _fixed(200, "training epochs (636 x 200 steps at batch 256)", source),
            "model": _fixed("resnet18", "architecture of both networks", source),
        }
    if key == ("jtt", "celeba"):
        source = "Liu et al. 2021 (CelebA: T = 1, λ_up = 50, lr 1e-5, L2 0.1, batch 128, up to 50 epochs)"
        return {
            "weight_decay": HParam(0.1, Choice((1e-4, 0.1, 1.0)), _WD, source),
            "epochs": _fixed(50, "epochs of the final stage", source),
            "jtt_upweight": HParam(50.0, Choice((20.0, 50.0, 100.0)), "λ_up", source),
            "jtt_first_stage_epochs": HParam(1, Choice((1, 2, 5)), "T, epochs of the identification stage", source),
        }
    if algorithm == "jtt" and dataset != "celeba":
        steps = {"two-moons": 1000, "colored-mnist": 100, "synthetic": 10}.get(dataset, 100)
        return {
            "jtt_first_stage_epochs": HParam(
                steps,
                IntLogUniform(max(1, steps // 10), steps * 5),
                "T; full batch, so epochs = steps (no published setting; ours)",
            )
        }
    return {}


#: Source of :func:`colored_mnist_oracle_overrides`.
ORACLE_SOURCE = (
    "IRM reference code (Arjovsky et al. 2019, code/colored_mnist/reproduce_paper_results.sh, 'ERM, grayscale model "
    "(oracle)'): --grayscale_model --hidden_dim=83 --l2_regularizer_weight=0.0008602868865288383 "
    "--lr=0.0028171488133821726 --penalty_anneal_iters=0 --penalty_weight=0.0 --steps=101"
)


def colored_mnist_oracle_overrides() -> dict[str, Any]:
    """Table 1's oracle: overrides of ERM's ``colored-mnist`` row that give the IRM reference's grayscale run.

    The reference (:data:`ORACLE_SOURCE`) trains plain ERM (``penalty_weight=0`` from step 0: no IRM penalty at any
    step, no loss rescaling) plus ``l2 · Σ_p ‖p‖²`` over every parameter, biases included (our ``l2_weight``), with
    full-batch Adam for 101 steps, on the channel sum of the coloured images (196 inputs, task option
    ``merge_channels=True``): hidden 83-83, Xavier-uniform weights and zero biases as every Colored MNIST run. Its
    hyperparameters came from a 50-trial random search that maximised min(train env accuracies, *test* accuracy),
    and steps from {101, ..., 501}. The paper's oracle row (73.5 ± 0.2 / 73.0 ± 0.4) is the IRM paper's number for
    this run.
    """
    return {"hidden": [83, 83], "lr": 0.0028171488133821726, "l2_weight": 0.0008602868865288383, "steps": 101}


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def _check_names(algorithm: str, dataset: str) -> None:
    if algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"unknown algorithm {algorithm!r}; known algorithms: {', '.join(ALGORITHM_NAMES)}")
    if dataset not in dataset_names():
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(dataset_names())}")


def hparam_specs(algorithm: str, dataset: str) -> dict[str, HParam]:
    """Every hyperparameter of ``algorithm`` on ``dataset``: name -> :class:`HParam` (default, search, doc, source)."""
    _check_names(algorithm, dataset)
    rows = {**_dataset_rows(dataset), **_algorithm_rows(algorithm), **_override_rows(algorithm, dataset)}
    return {name: spec for name, spec in rows.items() if spec is not _DROP}


def default_hparams(algorithm: str, dataset: str) -> dict[str, Any]:
    """The default hyperparameters (a fresh, JSON-serialisable dict)."""
    return {name: copy.deepcopy(spec.default) for name, spec in hparam_specs(algorithm, dataset).items()}


def _generator(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def accepted_kinds(algorithm: str, dataset: str | None = None) -> dict[str, set[str]]:
    """Every hyperparameter name of ``algorithm`` (on ``dataset``, or on any data set) and the kinds of value its
    defaults take there (``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"list"``, ``"None"``)."""
    datasets = dataset_names() if dataset is None else (dataset,)
    kinds: dict[str, set[str]] = {}
    for name in datasets:
        for key, spec in hparam_specs(algorithm, name).items():
            kinds.setdefault(key, set()).add(_kind(spec.default))
    return kinds


def check_hparams(algorithm: str, hparams: Mapping[str, Any], dataset: str | None = None) -> None:
    """Refuse what the table does not know: an unknown name (with the closest known one), or a value of the wrong
    kind (``lr=True``, ``rescale_loss="no"``, ``hidden=300``). An ``int`` passes where a ``float`` is expected;
    per-class hyperparameters (``sd_lam``, ``sd_gamma``) take a number or a list of numbers."""
    names = accepted_kinds(algorithm, dataset)  # the names this data set knows
    kinds = accepted_kinds(algorithm)  # the kinds any data set's default takes (batch_size: None or an int)
    where = f"{algorithm} on {dataset}" if dataset else algorithm
    for name in hparams:
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown hyperparameter {name!r} for {where}{hint} (known: {', '.join(sorted(names))})")
    for name, value in hparams.items():
        expected, kind = kinds[name], _kind(value)
        ok = kind in expected or (kind == "int" and "float" in expected)
        if kind in ("int", "float") and "list" in expected and "float" in expected:
            ok = True
        if ok and kind == "list":
            ok = all(_kind(item) in ("int", "float") for item in value)
        if ok and kind == "float" and not math.isfinite(float(value)):
            ok = False
        if not ok:
            wanted = " or ".join(sorted(expected | ({"int"} if "float" in expected else set())))
            raise ValueError(f"hyperparameter {name!r} of {where} must be {wanted}, got {value!r} ({kind})")


_DISTRIBUTIONS: dict[str, Any] = {
    "log_uniform": LogUniform,
    "uniform": Uniform,
    "int_uniform": IntUniform,
    "int_log_uniform": IntLogUniform,
}


def distribution_from_spec(spec: Any, name: str = "search") -> Distribution:
    """A search distribution from its JSON form (sweep specs): ``{"log_uniform": [low, high]}``, ``{"uniform":
    [low, high]}``, ``{"int_uniform": [low, high]}``, ``{"int_log_uniform": [low, high]}``, ``{"choice": [a, b,
    ...]}``, ``{"fixed": value}`` or ``{"per_class": [spec_0, spec_1, ...]}`` (one independent draw per class)."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ValueError(
            f"{name}: a distribution is one of {{'log_uniform' | 'uniform' | 'int_uniform' | 'int_log_uniform': "
            f"[low, high]}}, {{'choice': [...]}}, {{'fixed': value}}, {{'per_class': [...]}}; got {spec!r}"
        )
    ((kind, value),) = spec.items()
    if kind in _DISTRIBUTIONS:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(_kind(v) in ("int", "float") for v in value)
        ):
            raise ValueError(f"{name}: {kind} needs [low, high], got {value!r}")
        low, high = value
        if not low <= high or (kind in ("log_uniform", "int_log_uniform") and low <= 0):
            raise ValueError(f"{name}: {kind} needs 0 < low <= high (log) or low <= high, got {value!r}")
        return _DISTRIBUTIONS[kind](low, high)
    if kind == "choice":
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{name}: choice needs a non-empty list, got {value!r}")
        return Choice(tuple(value))
    if kind == "fixed":
        return Fixed(value)
    if kind == "per_class":
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{name}: per_class needs a list of distributions, got {value!r}")
        return PerClass(tuple(distribution_from_spec(v, f"{name}[{i}]") for i, v in enumerate(value)))
    raise ValueError(
        f"{name}: unknown distribution {kind!r}; known: {', '.join([*_DISTRIBUTIONS, 'choice', 'fixed', 'per_class'])}"
    )


def random_hparams(
    algorithm: str, dataset: str, seed: int, search: Mapping[str, Distribution] | None = None
) -> dict[str, Any]:
    """A random draw from the search space; deterministic in ``seed`` (an integer >= 0).

    Each hyperparameter is drawn from its own generator seeded by ``(seed, name)``. Fixed hyperparameters keep their
    defaults. ``search`` replaces the table's distribution of the hyperparameters it names (a sweep's own search
    space; :func:`distribution_from_spec` reads them from JSON). By DomainBed's convention a sweep uses
    :func:`default_hparams` for its first trial.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    specs = hparam_specs(algorithm, dataset)
    unknown = set(search or {}) - set(specs)
    if unknown:
        raise ValueError(f"search names unknown hyperparameters of {algorithm} on {dataset}: {sorted(unknown)}")
    distributions = {name: spec.search for name, spec in specs.items()} | dict(search or {})
    return {name: distribution.sample(_generator(int(seed), name)) for name, distribution in distributions.items()}


def describe(value: Any) -> str:
    """A short text form of a hyperparameter value, for tables."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    return _show(value)


#: CelebA's ``cpu`` preset (Table 2 from scratch on 2 cores, :mod:`gradstarve.experiments.reproduce.celeba`): every
#: method's hyperparameters over the paper defaults above (that module's docstring says how they were chosen).
#: ``momentum`` is dropped where the optimizer is Adam.
CELEBA_CPU_COMMON: dict[str, Any] = {
    "optimizer": "adam",  # from scratch: SGD at the paper's lr 1e-5 barely moves a randomly initialised network
    "lr": 1e-3,  # Adam's standard rate for a batch-normalised ResNet trained from scratch
    "weight_decay": 1e-4,  # mild coupled L2, the same for every method so only the objectives differ
    "batch_size": 128,  # the paper's (App. A.3); 125 steps per epoch on the 16,000-image subset
    "epochs": 20,  # ERM's validation accuracy peaks at epoch 5 (seed 0); 9 runs take 2-3 h on 2 idle cores
    "model": "resnet18",
    "pretrained": False,  # no ImageNet weights are available offline here
}


CELEBA_CPU_HPARAMS: dict[str, dict[str, Any]] = {
    "erm": {},
    "sd": {},  # keeps App. A.3's λ = (0.088, 0.012), γ = (0.44, 2.5): logit-scale values, not tied to the optimiser
    "sd_eq25": {"sd_lam": 0.2, "sd_gamma": 0.0},  # released table_2.sh's sp = 0.1 = λ/2, one λ, no target
    "sd_margin": {},  # sd's setting, γ_0 negated (see margin_gamma)
    "group_dro": {"groupdro_eta": 0.01},  # Sagawa et al.'s η; their strong L2 (0.1) is for SGD on a pretrained net
    "lff": {"lff_q": 0.7, "lff_ema": 0.7},  # Nam et al.'s values; batch 128 (not 256) to keep steps comparable
    "jtt": {"jtt_first_stage_epochs": 2, "jtt_upweight": 20.0, "epochs": 22},  # T = 2, then 20 final epochs
}


#: The search space of each method on the cpu preset: seeded random draws (DomainBed's and SubpopBench's protocol,
#: :func:`gradstarve.hparams.distribution_from_spec`), setting 0 being :data:`CELEBA_CPU_HPARAMS`. Ranges: around the
#: from-scratch Adam recipe for the optimiser; SD's λ over 1e-3..30 per class (App. A.3 searched λ and γ; Shrestha
#: et al. 2022 chose λ = 10 for a from-scratch ResNet-18) and γ over the released ranges; Group DRO's η over
#: Sagawa et al.'s grid's span; JTT's T and λ_up over Liu et al.'s grid; LfF's q over (0.3, 0.9).
CELEBA_CPU_SEARCH: dict[str, dict[str, Any]] = {
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

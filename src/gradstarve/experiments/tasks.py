"""Tasks: a data set's splits, its group structure and the model the paper trains on it, by name.

``load_task(dataset, options, seed)`` returns a :class:`Task` that :mod:`gradstarve.experiments.train` runs. Options
(``RunConfig.data``) choose the variant; ``data_root`` locates files and is not part of a run's identity.

=================  ==================================================================================================
dataset            splits and groups
=================  ==================================================================================================
``synthetic``      two training environments of a tiny problem whose spurious feature flips at test time (tests)
``two-moons``      the Δ > 0 training set; the evaluation set is a fresh draw (``delta`` option)
``colored-mnist``  train (2 environments), ``val`` (held out of them, ``val_fraction``), test; Fig. 4 variants with
                   ``fig4=True``; grayscale inputs with ``gray=True`` (both channels ``image / 2``); the channel
                   sum with ``merge_channels=True`` (``(n, 1, 14, 14)``, a 196-input MLP: the IRM reference's
                   ``--grayscale_model``, Table 1's oracle); fewer images with ``n_train``, ``n_test`` (quick
                   runs); two-channel models skip the empty colour channel
                   (:class:`~gradstarve.models.channel_sparse_mlp.ChannelSparseMLP`)
``celeba``         train / val / test with the four (Blond_Hair, Male) groups; images at ``resolution``;
                   ``channels_last=True``: the model and the training batches in channels-last memory (1.3x faster
                   steps on this project's CPU; other rounding, so part of the run's identity); options
                   ``preset`` (``cpu`` / ``paper``, :data:`gradstarve.models.resnet.PRESETS`), ``train_size`` (at
                   most this many training images, a seeded random subset: quick runs), ``pretrained_weights`` (a local
                   torchvision-format ImageNet checkpoint, required when ``hparams["pretrained"]`` is true)
=================  ==================================================================================================
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradstarve.data.base import LabelledData
from gradstarve.models import MLP
from gradstarve.models.channel_sparse_mlp import ChannelSparseMLP

TASKS: tuple[str, ...] = ("synthetic", "two-moons", "colored-mnist", "celeba")

#: Option keys that only say where data lives or how it is read; they never change a run's results.
LOCATION_OPTIONS: frozenset[str] = frozenset({"data_root", "cache_dir", "workers"})


#: Every option each task reads (besides :data:`LOCATION_OPTIONS` and ``data_seed``), with the kinds of value it
#: takes: an unknown option or a wrong kind is an error, never silently ignored (``n_trian=200``).
TASK_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "synthetic": {"n": (int,), "dims": (int,)},
    "two-moons": {"delta": (float, int), "n": (int,)},
    "colored-mnist": {
        "val_fraction": (float, int),
        "fig4": (bool,),
        "gray": (bool,),
        "merge_channels": (bool,),
        "n_train": (int, type(None)),
        "n_test": (int, type(None)),
    },
    "celeba": {
        "preset": (str,),
        "resolution": (int,),
        "target": (str,),
        "attribute": (str,),
        "train_size": (int, type(None)),
        "pretrained_weights": (str, Path, type(None)),
        "augment": (bool,),
        "progress": (bool,),
        "channels_last": (bool,),
    },
}
_COMMON_OPTIONS = {"data_seed": (int,)}


#: Environment variable: comma-separated modules to import before a task name is looked up, so that the tasks they
#: register (:func:`register_task`) exist in every process, sweep workers included.
TASK_MODULES_VARIABLE = "GRADSTARVE_TASK_MODULES"


@dataclass(frozen=True)
class RegisteredTask:
    """A user's task (:func:`register_task`)."""

    name: str
    loader: Callable[..., Mapping[str, LabelledData]]
    options: dict[str, tuple[type, ...]]
    build_model: Callable[[Mapping[str, Any], torch.Generator], nn.Module] | None


_REGISTRY: dict[str, RegisteredTask] = {}
_imported_modules: set[str] = set()


def register_task(
    name: str,
    loader: Callable[..., Mapping[str, LabelledData]],
    *,
    hparams: Mapping[str, Any] | None = None,
    options: Mapping[str, tuple[type, ...] | type] | None = None,
    build_model: Callable[[Mapping[str, Any], torch.Generator], nn.Module] | None = None,
    replace: bool = False,
) -> None:
    """Make your own data set a task that sweeps, ``hparams`` and the trainer accept by ``name`` (DomainBed style).

    Args:
        name: the task's name (not a built-in one).
        loader: ``loader(seed, **options) -> {"train": LabelledData, "val": ..., "test": ..., ...}``: at least
            ``"train"``; every split is evaluated, and ``group`` ids define the groups (worst-group accuracy, and
            the environments / groups of IRM, V-REx and Group DRO). ``seed`` draws whatever is random in the data.
        hparams: the task's default hyperparameters over a generic row (Adam, lr 1e-3, full batch, 1,000 steps, an
            MLP 300-300); plain values, or :class:`gradstarve.hparams.HParam` for a searched one.
        options: the task options ``loader`` takes, with their types (unknown options are refused).
        build_model: ``(hparams, generator) -> nn.Module`` giving one logit per example; default an MLP on the
            flattened inputs with ``hparams["hidden"]``.
        replace: allow registering ``name`` again (e.g. in a notebook).

    The run identity names the task and its options; each run folder also records a fingerprint of the data it
    trained on, so a folder is never reused for other data (changed files or code fail loudly). For sweep workers
    in other processes, register the task in a module named by ``$GRADSTARVE_TASK_MODULES``.
    """
    from gradstarve.hparams import DATASETS, register_dataset

    if not isinstance(name, str) or not name or name in DATASETS:
        raise ValueError(f"task name must be a new, non-empty string (built-in: {', '.join(TASKS)}), got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"task {name!r} is already registered; pass replace=True to register it again")
    if not callable(loader):
        raise ValueError("loader must be a callable: loader(seed, **options) -> {'train': LabelledData, ...}")
    kinds = {key: value if isinstance(value, tuple) else (value,) for key, value in (options or {}).items()}
    register_dataset(name, hparams)
    _REGISTRY[name] = RegisteredTask(name, loader, kinds, build_model)


def _import_task_modules() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get(TASK_MODULES_VARIABLE, "").split(","))):
        if module not in _imported_modules:
            _imported_modules.add(module)
            importlib.import_module(module)


def task_names() -> tuple[str, ...]:
    """The built-in tasks and the registered ones (after importing ``$GRADSTARVE_TASK_MODULES``)."""
    _import_task_modules()
    return TASKS + tuple(_REGISTRY)


def check_task_options(dataset: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming an unknown option of ``dataset`` (with the closest known name) or a value of the
    wrong kind."""
    if dataset not in task_names():
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(task_names())}")
    declared = TASK_OPTIONS[dataset] if dataset in TASK_OPTIONS else _REGISTRY[dataset].options
    known = {**declared, **_COMMON_OPTIONS}
    for name, value in options.items():
        if name in LOCATION_OPTIONS:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown option {name!r} for the {dataset} task{hint} (known: {', '.join(sorted(known))})"
            )
        kinds = known[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ValueError(f"option {name!r} of the {dataset} task must be {names}, got {value!r}")


def check_data(dataset: str, options: Mapping[str, Any] | None = None) -> None:
    """Preflight: check once that ``dataset``'s files are there and usable before any run folder is made, raising
    :class:`~gradstarve.data.errors.MissingDataError` / ``CorruptDataError`` with the file and the fix. Reads label
    files and checksums, not every image (a CelebA image that fails to decode is still reported when loaded)."""
    options = dict(options or {})
    check_task_options(dataset, options)  # also imports $GRADSTARVE_TASK_MODULES
    if dataset == "colored-mnist":
        from gradstarve.data.mnist import load_mnist

        load_mnist(options.get("data_root"), "train", verify=True)
    elif dataset == "celeba":
        from gradstarve.data.celeba import index_celeba
        from gradstarve.data.paths import resolve_data_root

        index = index_celeba(Path(resolve_data_root(options.get("data_root"))))
        for split, name in enumerate(("train", "val", "test")):
            if not np.any(index.split == split):
                from gradstarve.data.celeba import CelebAFormatError

                raise CelebAFormatError(f"CelebA at {index.root} has no {name} image: Table 2 needs all three splits")


def data_fingerprint(task: Task) -> str:
    """SHA-256 (16 hex digits) over every split's name, inputs, labels and groups: what a run trained and was
    evaluated on. Recorded in each run folder (``data.json``), so a run folder is never reused for other data."""
    digest = hashlib.sha256()
    for name, split in [("__train__", task.train), *sorted(task.evaluation.items())]:
        digest.update(name.encode())
        for tensor in (split.x, split.y, split.group):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


@dataclass
class Task:
    """Everything a training run needs from a data set.

    Attributes:
        train: the training split (``group`` = environment / group ids used by the methods).
        evaluation: every split to evaluate, by name (``"train"`` included).
        build_model: ``(hparams, generator) -> nn.Module`` giving logits for ``train.x``.
        augment: optional ``(x, generator) -> x`` applied to each training batch.
    """

    name: str
    train: LabelledData
    evaluation: dict[str, LabelledData]
    build_model: Callable[[Mapping[str, Any], torch.Generator], nn.Module]
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return self.train.n_groups


def _mlp_builder(
    in_features: int, channels: int | None = None
) -> Callable[[Mapping[str, Any], torch.Generator], nn.Module]:
    """The MLP of ``hparams`` (``hidden``, ``activation``, ``init``) with one output. With ``channels`` (Colored
    MNIST), a :class:`ChannelSparseMLP` whose first layer skips each example's all-zero channels: the same function,
    parameters and initialisation, about 25 % less arithmetic per full-batch step."""

    def build(hparams: Mapping[str, Any], generator: torch.Generator) -> nn.Module:
        shape = (in_features, tuple(hparams.get("hidden", (300, 300))), 1)
        options = {"activation": hparams.get("activation", "relu"), "init": hparams.get("init", "default")}
        if channels is None:
            return MLP(*shape, **options, generator=generator)
        return ChannelSparseMLP(channels, *shape, **options, generator=generator)

    return build


def synthetic(seed: int, n: int = 200, dims: int = 5) -> dict[str, LabelledData]:
    """A tiny two-environment problem: feature 0 agrees with the label 75% of the time everywhere, feature 1 (the
    shortcut) 90% / 80% in the training environments and 10% at test; the other features are noise."""
    generator = torch.Generator().manual_seed(seed)

    def environment(count: int, shortcut: float, group_id: int) -> tuple[torch.Tensor, ...]:
        y = (torch.rand(count, generator=generator) < 0.5).long()
        signs = 2.0 * y - 1.0
        core = torch.where(torch.rand(count, generator=generator) < 0.75, signs, -signs)
        spurious = torch.where(torch.rand(count, generator=generator) < shortcut, signs, -signs)
        x = torch.randn(count, dims, generator=generator) * 0.5
        x[:, 0] += core
        x[:, 1] += spurious
        return x, y, torch.full((count,), group_id, dtype=torch.int64)

    parts = [environment(n, 0.9, 0), environment(n, 0.8, 1)]
    train = LabelledData(*(torch.cat(p) for p in zip(*parts, strict=True)), ("env0", "env1"), "synthetic/train")
    val_parts = [environment(n // 4, 0.9, 0), environment(n // 4, 0.8, 1)]
    val = LabelledData(*(torch.cat(p) for p in zip(*val_parts, strict=True)), ("env0", "env1"), "synthetic/val")
    test = LabelledData(*environment(n, 0.1, 0), ("test",), "synthetic/test")
    return {"train": train, "val": val, "test": test}


def load_task(dataset: str, options: Mapping[str, Any] | None = None, seed: int = 0) -> Task:
    """The :class:`Task` ``dataset`` with ``options`` (see the module docstring); ``seed`` draws the data where it is
    random (synthetic, two-moons, Colored MNIST's shuffles, label noise and colours)."""
    options = dict(options or {})
    check_task_options(dataset, options)  # also imports $GRADSTARVE_TASK_MODULES
    data_seed = int(options.pop("data_seed", seed))
    if dataset == "synthetic":
        splits = synthetic(data_seed, **{k: options[k] for k in ("n", "dims") if k in options})
        return Task(dataset, splits["train"], splits, _mlp_builder(splits["train"].x.shape[1]))
    if dataset == "two-moons":
        from gradstarve.data.two_moons import two_moons

        delta = float(options.get("delta", 0.1))
        train = two_moons(n=int(options.get("n", 300)), delta=delta, seed=data_seed)
        evaluation = {"train": train, "test": two_moons(n=1000, delta=delta, seed=data_seed + 10_000)}
        return Task(dataset, train, evaluation, _mlp_builder(2))
    if dataset == "colored-mnist":
        from gradstarve.data.colored_mnist import colored_mnist, fig4_variants, merge_channels

        common = {
            "data_root": options.get("data_root"),
            "seed": data_seed,
            "gray": bool(options.get("gray", False)),
        }
        sizes = {key: int(options[key]) for key in ("n_train", "n_test") if options.get(key) is not None}
        splits = colored_mnist(**common, **sizes, val_fraction=float(options.get("val_fraction", 0.0)))
        evaluation = dict(splits)
        if options.get("fig4", False):
            variants = fig4_variants(data_root=common["data_root"], seed=data_seed, **sizes)
            evaluation.update({f"fig4/{name}": split for name, split in variants.items()})
        if options.get("merge_channels", False):  # the IRM reference's --grayscale_model: a 196-input MLP
            evaluation = {name: merge_channels(split) for name, split in evaluation.items()}
        train = evaluation["train"]
        channels, in_features = train.x.shape[1], math.prod(train.x.shape[1:])
        build = _mlp_builder(in_features, channels if channels > 1 else None)
        return Task(dataset, train, evaluation, build, metadata=train.metadata)
    if dataset == "celeba":
        from gradstarve.data.celeba import augment, load_celeba
        from gradstarve.data.paths import resolve_data_root
        from gradstarve.models.resnet import PRESETS, build_resnet, load_pretrained

        preset = options.get("preset", "cpu")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        resolution = int(options.get("resolution", PRESETS[preset].resolution))
        splits = load_celeba(
            Path(resolve_data_root(options.get("data_root"))),
            resolution=resolution,
            target=options.get("target", "Blond_Hair"),
            attribute=options.get("attribute", "Male"),
            cache_dir=options.get("cache_dir"),
            progress=bool(options.get("progress", False)),
        )

        train = splits["train"]
        if options.get("train_size") is not None:
            train = _random_subset(train, int(options["train_size"]), data_seed)
        weights = options.get("pretrained_weights")
        memory_format = torch.channels_last if options.get("channels_last", False) else torch.contiguous_format

        def build(hparams: Mapping[str, Any], generator: torch.Generator) -> nn.Module:
            model = build_resnet(preset, out_features=1, generator=generator)
            if hparams.get("pretrained", False):
                if weights is None:
                    raise ValueError(
                        "hparams['pretrained'] is true but no ImageNet weights were given: pass the task option "
                        "pretrained_weights=PATH (a torchvision-format checkpoint; nothing is downloaded), or set "
                        "pretrained=False to train from scratch"
                    )
                load_pretrained(model, weights)
            return model.to(memory_format=memory_format)

        def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return augment(x, generator).contiguous(memory_format=memory_format)

        evaluation = {**splits, "train": train}
        return Task(dataset, train, evaluation, build, augment=flip if options.get("augment", True) else None)
    if dataset in _REGISTRY:
        return _registered_task(_REGISTRY[dataset], options, data_seed)
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(TASKS)}")


def _registered_task(entry: RegisteredTask, options: Mapping[str, Any], seed: int) -> Task:
    arguments = {k: v for k, v in options.items() if k not in LOCATION_OPTIONS or k in entry.options}
    splits = dict(entry.loader(seed, **arguments))
    if "train" not in splits or not all(isinstance(v, LabelledData) for v in splits.values()):
        raise ValueError(
            f"the loader of task {entry.name!r} must return a dict of LabelledData with a 'train' split, got "
            f"{ {k: type(v).__name__ for k, v in splits.items()} }"
        )
    if any(len(split) == 0 for split in splits.values()):
        raise ValueError(f"task {entry.name!r}: empty splits {[k for k, v in splits.items() if len(v) == 0]}")
    train = splits["train"]
    build = entry.build_model or _mlp_builder(math.prod(train.x.shape[1:]))
    return Task(entry.name, train, splits, build, metadata=dict(train.metadata))


def _random_subset(data: LabelledData, size: int, seed: int) -> LabelledData:
    """At most ``size`` examples of ``data`` (all of them if it has fewer), drawn without replacement from a
    generator seeded with ``seed``, in their original order (group counts shrink in proportion, up to noise)."""
    if size < 1:
        raise ValueError(f"train_size must be >= 1, got {size}")
    if size >= len(data):
        return data
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    subset = data.subset(index, name=f"{data.name}[{size}]")
    counts = torch.bincount(subset.group, minlength=subset.n_groups).tolist()
    subset.metadata.update(n=size, group_counts=dict(zip(subset.group_names, counts, strict=True)))
    return subset

"""Training methods behind one registry: ``ALGORITHMS[name](model, hparams, n_groups)``.

Every method is an :class:`~gradstarve.algorithms.base.Algorithm` with ``update(batch) -> dict`` and
``predict(x) -> logits``; batches are ``(x, y, group[, index])`` (see :mod:`gradstarve.algorithms.base`).
Default hyperparameters per (algorithm, dataset) live in :mod:`gradstarve.hparams`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from gradstarve.algorithms.base import Algorithm, Batch, Objective
from gradstarve.algorithms.erm import ERM
from gradstarve.algorithms.group_dro import GroupDRO
from gradstarve.algorithms.irm import IRM
from gradstarve.algorithms.jtt import JTT
from gradstarve.algorithms.lff import LfF
from gradstarve.algorithms.sd import SpectralDecoupling
from gradstarve.algorithms.vrex import VREx

#: The registry every experiment uses: name -> class.
ALGORITHMS: dict[str, type[Algorithm]] = {
    "erm": ERM,
    "sd": SpectralDecoupling,
    "irm": IRM,
    "vrex": VREx,
    "group_dro": GroupDRO,
    "lff": LfF,
    "jtt": JTT,
}


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def build_algorithm(name: str, model: nn.Module, hparams: Mapping[str, Any], n_groups: int, **kwargs: Any) -> Algorithm:
    """``ALGORITHMS[name](model, hparams, n_groups, **kwargs)`` with a clear error for unknown names."""
    return get_algorithm(name)(model, hparams, n_groups, **kwargs)


__all__ = [
    "ALGORITHMS",
    "ERM",
    "IRM",
    "JTT",
    "Algorithm",
    "Batch",
    "GroupDRO",
    "LfF",
    "Objective",
    "SpectralDecoupling",
    "VREx",
    "build_algorithm",
    "get_algorithm",
]

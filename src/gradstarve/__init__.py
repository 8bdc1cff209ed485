"""gradstarve: Gradient Starvation (Pezeshki et al., NeurIPS 2021) as software.

Layers (see docs/architecture.md): maths (``theory``, ``ntk``, ``penalties``, ``analysis``) -> parts (``data``,
``models``, ``losses``) -> methods (``algorithms``, ``hparams``) -> experiments -> CLI.

The names most users need are importable from the package itself, loaded on first use (PEP 562), so that
``import gradstarve`` stays fast (no torch import until one of them is touched)::

    import gradstarve as gs
    analysis = gs.FeatureAnalysis(model, x, y)          # Def. 1 features of your model's NTK
    criterion = gs.SpectralDecouplingLoss(lam=0.006)   # Eq. 25
    gs.theory.fixed_point(gs.theory.coupled_pair(0.6), [4.0, 2.0], lam=0.01)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("gradstarve")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "FeatureAnalysis": "gradstarve.analysis",
    "FeatureTracker": "gradstarve.analysis",
    "starvation_report": "gradstarve.analysis",
    "SpectralDecouplingLoss": "gradstarve.losses",
    "spectral_decoupling": "gradstarve.penalties",
    "empirical_ntk": "gradstarve.ntk",
    "top_features": "gradstarve.ntk",
    "fixed_point": "gradstarve.theory",
    "starvation_curve": "gradstarve.theory",
    "ALGORITHMS": "gradstarve.algorithms",
    "MLP": "gradstarve.models",
}
_SUBMODULES = ("theory", "ntk", "analysis", "penalties", "losses", "metrics", "algorithms", "hparams", "models", "data")

__all__ = [  # noqa: RUF022 (grouped: version, then the names, then the submodules)
    "__version__",
    "FeatureAnalysis",
    "FeatureTracker",
    "starvation_report",
    "SpectralDecouplingLoss",
    "spectral_decoupling",
    "empirical_ntk",
    "top_features",
    "fixed_point",
    "starvation_curve",
    "ALGORITHMS",
    "MLP",
    "theory",
    "ntk",
    "analysis",
    "penalties",
    "losses",
    "metrics",
    "algorithms",
    "hparams",
    "models",
    "data",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from gradstarve import algorithms, analysis, data, hparams, losses, metrics, models, ntk, penalties, theory
    from gradstarve.algorithms import ALGORITHMS
    from gradstarve.analysis import FeatureAnalysis, FeatureTracker, starvation_report
    from gradstarve.losses import SpectralDecouplingLoss
    from gradstarve.models import MLP
    from gradstarve.ntk import empirical_ntk, top_features
    from gradstarve.penalties import spectral_decoupling
    from gradstarve.theory import fixed_point, starvation_curve


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"gradstarve.{name}")
    else:
        raise AttributeError(f"module 'gradstarve' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

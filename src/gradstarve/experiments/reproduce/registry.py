"""Every reproduction of the paper by name, and running them all into one report (``gradstarve reproduce``).

One protocol: a recipe is the function ``reproduce(out_dir: Path, *, quick: bool = False, data_root: Path | None
= None, progress: Progress | None = None) -> Reproduction`` of a module of :mod:`gradstarve.experiments.reproduce`;
it writes its files under ``out_dir`` and raises :class:`~gradstarve.experiments.reproduce.base.DataMissingError`
(clear message) when its data is absent; ``progress(name, done, total)`` is offered to every recipe (those without
long loops ignore it). Recipes are imported lazily, by module path, so a recipe whose module is not there yet (or
fails to import) is reported as "not available" rather than breaking the others.

The parts, in :data:`RECIPES`: ``fig6`` (Fig. 6, App. C), ``starvation`` (Thm. 2 as a curve), ``legendre``
(Fig. 5 and Table 4, App. B.1), ``two-moons`` (Fig. 2-3), ``colored-mnist`` (Table 1 and Fig. 4; needs MNIST),
``celeba`` (Table 2; needs CelebA) and ``celeba-features`` (Def. 1 / Eq. 8 on Table 2's ResNet; needs CelebA), each
the ``reproduce`` function of the module of the same name.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradstarve.experiments.report import Skipped, write_report
from gradstarve.experiments.reproduce.base import DataMissingError, Reproduction

_PACKAGE = "gradstarve.experiments.reproduce"


@dataclass(frozen=True)
class Recipe:
    """A reproduction: ``name`` (its sub-folder of the output), what it reproduces, the module of
    :mod:`gradstarve.experiments.reproduce` whose ``function`` (the one protocol: ``reproduce(out_dir, *, quick,
    data_root, progress) -> Reproduction``) runs it, and which data it needs (``None``: none)."""

    name: str
    title: str
    module: str
    data: str | None = None
    function: str = "reproduce"


#: Every reproduction, by name, in the report's order.
RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("fig6", "Fig. 6: primal vs dual dynamics, weight decay vs Spectral Decoupling", "fig6"),
        Recipe("starvation", "Thm. 2: gradient starvation as a curve", "starvation"),
        Recipe("legendre", "Fig. 5 and Table 4: Legendre duals of margin losses", "legendre"),
        Recipe("two-moons", "Fig. 2-3: two moons", "two_moons"),
        Recipe("colored-mnist", "Table 1 and Fig. 4: Colored MNIST", "colored_mnist", "MNIST"),
        Recipe("celeba", "Table 2: CelebA", "celeba", "CelebA"),
        Recipe("celeba-features", "Def. 1 / Eq. 8 on CelebA's ResNet: ERM vs SD", "celeba_features", "CelebA"),
    )
}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(RECIPE_NAMES)}")
    return RECIPES[name]


class RecipeUnavailableError(Exception):
    """The recipe's module or function is not in this version of gradstarve."""


def load_recipe(recipe: Recipe) -> Callable[..., Any]:
    """The recipe's function; :class:`RecipeUnavailableError` if its module does not import or lacks the function."""
    module_name = f"{_PACKAGE}.{recipe.module}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RecipeUnavailableError(f"{module_name} cannot be imported ({error})") from None
    function = getattr(module, recipe.function, None)
    if not callable(function):
        raise RecipeUnavailableError(f"{module_name} has no function {recipe.function}")
    return function


def _is_data_missing(error: BaseException) -> bool:
    from gradstarve.data.errors import MissingDataError

    return isinstance(error, DataMissingError | MissingDataError)


def run_recipe(
    recipe: Recipe,
    out_dir: Path,
    *,
    quick: bool = False,
    data_root: Path | None = None,
    progress: Callable[..., None] | None = None,
) -> Reproduction | Skipped:
    """Run one recipe into ``out_dir / recipe.name``; a :class:`Skipped` says why it did not produce a result."""
    start = time.perf_counter()
    try:
        function = load_recipe(recipe)
    except RecipeUnavailableError as error:
        return Skipped(recipe.name, recipe.title, "not available", f"Not in this version of gradstarve: {error}.")
    try:
        result = function(Path(out_dir) / recipe.name, quick=quick, data_root=data_root, progress=progress)
    except Exception as error:
        seconds = time.perf_counter() - start
        if _is_data_missing(error):
            return Skipped(recipe.name, recipe.title, "data missing", str(error), seconds)
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return Skipped(recipe.name, recipe.title, "failed", last, seconds)
    if not isinstance(result, Reproduction):
        return Skipped(
            recipe.name,
            recipe.title,
            "failed",
            f"the recipe returned {type(result).__name__}, not a Reproduction",
            time.perf_counter() - start,
        )
    if not result.seconds:
        result.seconds = time.perf_counter() - start
    return result


@dataclass
class ReproduceResult:
    """What :func:`reproduce_all` did: the reproductions, the skipped parts, the report files and the wall time."""

    reproductions: list[Reproduction]
    skipped: list[Skipped]
    report: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Skipped]:
        return [s for s in self.skipped if s.kind == "failed"]


def reproduce_all(
    out_dir: Path | str,
    *,
    quick: bool = False,
    data_root: Path | str | None = None,
    only: Sequence[str] | None = None,
    on_event: Callable[[str, Recipe, Reproduction | Skipped | None], None] | None = None,
    progress: Callable[..., None] | None = None,
    command: str | None = None,
) -> ReproduceResult:
    """Run every recipe (or those named in ``only``, in registry order) and write ``report.md`` / ``report.html``.

    ``on_event("started" | "finished", recipe, outcome)`` reports each recipe as it starts and ends. A recipe that
    fails does not stop the others; it is listed in the report as failed.
    """
    wanted = set(RECIPES) if only is None else {get_recipe(name).name for name in only}
    recipes = [recipe for name, recipe in RECIPES.items() if name in wanted]
    out_dir = Path(out_dir)
    data_root = None if data_root is None else Path(data_root)
    start = time.perf_counter()
    reproductions: list[Reproduction] = []
    skipped: list[Skipped] = []
    for recipe in recipes:
        if on_event is not None:
            on_event("started", recipe, None)
        outcome = run_recipe(recipe, out_dir, quick=quick, data_root=data_root, progress=progress)
        if isinstance(outcome, Reproduction):
            reproductions.append(outcome)
        else:
            skipped.append(outcome)
        if on_event is not None:
            on_event("finished", recipe, outcome)
    seconds = time.perf_counter() - start
    report = write_report(out_dir, reproductions, skipped, command=command, seconds=seconds)
    return ReproduceResult(reproductions, skipped, report, seconds)

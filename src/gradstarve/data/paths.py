"""Where data sets live on disk: one data root, one folder per data set inside it.

The data root is, in order of precedence:

1. the explicit ``data_root`` argument (the CLI's ``--data-root`` option);
2. the ``GRADSTARVE_DATA`` environment variable;
3. ``$XDG_CACHE_HOME/gradstarve``, or ``~/.cache/gradstarve`` when ``XDG_CACHE_HOME`` is unset or empty.

Data set ``name`` lives in ``<root>/<name>/`` under its original file names, e.g. ``<root>/mnist/
train-images-idx3-ubyte.gz``, so a folder holding the original files works as a data root as it is
(``--data-root ../shared/data`` for the offline copy). Nothing is ever downloaded implicitly: a missing file raises
:class:`~gradstarve.data.errors.MissingDataError` naming the command (:func:`download_command`) that fetches it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

DATA_ROOT_ENV = "GRADSTARVE_DATA"


def default_data_root() -> Path:
    """The data root used when neither an argument nor ``GRADSTARVE_DATA`` gives one (see the module docstring)."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "gradstarve"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_root`` if given, else ``$GRADSTARVE_DATA``, else :func:`default_data_root`.

    Returned absolute (with ``~`` expanded) so that error messages and printed commands work from any directory.
    The folder need not exist.
    """
    if data_root is None or str(data_root) == "":
        data_root = os.environ.get(DATA_ROOT_ENV) or default_data_root()
    return Path(data_root).expanduser().absolute()


def dataset_dir(name: str, data_root: str | os.PathLike | None = None) -> Path:
    """``<data root>/<name>``: the folder holding data set ``name``'s original files."""
    return resolve_data_root(data_root) / name


def download_command(name: str, data_root: str | os.PathLike | None = None) -> str:
    """The exact shell command that fetches data set ``name`` into the (resolved) data root."""
    return f"gradstarve data download {name} --data-root {shlex.quote(str(resolve_data_root(data_root)))}"

"""gradstarve: Gradient Starvation (Pezeshki et al., NeurIPS 2021) as software.

Layers (see docs/architecture.md): maths (``theory``) -> parts -> methods -> experiments -> CLI.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gradstarve")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

"""The ``gradstarve`` command line: argument parsing and printing only; the work lives in the library.

One module per command group (``theory``, ``ntk``, ``data``, ``reproduce``, ``sweep``, and ``tools`` for ``analyse``
and ``hparams``), over the shared apps and printers of ``_shell``.
"""

from __future__ import annotations

import os
import sys

from gradstarve.cli import data, ntk, reproduce, sweep, theory, tools  # noqa: F401 (they register the commands)
from gradstarve.cli._shell import app, console  # noqa: F401


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, ValueError | OSError | RuntimeError) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gradstarve`` console script.

    A failure prints one line on stderr, ``error: <what is wrong and the fix>``, and exits with status 1 (usage
    errors: click's message, status 2). ``--debug`` anywhere on the command line (or ``GRADSTARVE_DEBUG=1``) shows
    the full traceback instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("GRADSTARVE_DEBUG", "") not in ("", "0")
    args = [arg for arg in args if arg != "--debug"]
    try:
        app(args=args, prog_name="gradstarve")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept, unfinished ones resume on the next launch", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if debug:
            raise
        print(f"error: {_one_line(error)} (run again with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None

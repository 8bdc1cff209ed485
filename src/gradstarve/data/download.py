"""Fetch one file from a list of mirrors, verify its MD5, and only then put it in place.

The file is streamed into a hidden temporary file next to its destination (``.<name>.<random>.part``) while its MD5
is computed; it is renamed to the destination (an atomic :func:`os.replace` on the same file system) only after the
checksum matches. A truncated, corrupt or interrupted download therefore never leaves a file that looks valid: the
temporary file is removed on every failure, and an existing destination is left untouched.

Mirrors are tried in order; a mirror that is unreachable, answers an HTTP error, closes the connection early or
delivers bytes with the wrong checksum is skipped. When every mirror fails, :class:`~gradstarve.data.errors.
DownloadError` lists each mirror with its reason. HTTP uses the standard library only (:mod:`urllib`), so any URL
scheme it supports works, ``file://`` included.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gradstarve import __version__
from gradstarve.data.errors import DownloadError

CHUNK_BYTES = 1 << 16
_MD5 = re.compile(r"^[0-9a-f]{32}$")


def md5_of_file(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks (constant memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    md5: str,
    *,
    timeout: float = 60.0,
    progress: bool = True,
    console: Console | None = None,
) -> Path:
    """Download the file at the first of ``urls`` that delivers it with MD5 ``md5``, to ``dest``.

    Args:
        urls: full URLs of the same file on different mirrors, tried in order.
        dest: where the verified file ends up; its folder is created if needed. An existing file there is replaced
            only by a verified download.
        md5: expected hex MD5 of the file (32 hex digits, case-insensitive).
        timeout: seconds to wait for a mirror to connect or send the next chunk.
        progress: show a rich progress bar (bytes, speed, time left) for each attempt.
        console: the rich console for the progress bar (default: a new one on stderr).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``urls`` is empty or ``md5`` is not 32 hex digits.
        DownloadError: every mirror failed; the message names each URL and why.
    """
    urls = [str(url) for url in urls]
    if not urls:
        raise ValueError("urls: need at least one URL to download from")
    md5 = md5.lower()
    if not _MD5.match(md5):
        raise ValueError(f"md5: expected 32 hex digits, got {md5!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not progress,
    ) as bar:
        for url in urls:
            handle, temporary = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    reason = _fetch(url, out, md5, timeout, bar, f"{dest.name} from {url}")
                if reason is None:
                    os.replace(temporary, dest)
                    return dest
                failures.append(f"  {url}: {reason}")
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
    tried = "\n".join(failures)
    raise DownloadError(
        f"could not download {dest.name} (expected MD5 {md5}) from any of {len(urls)} mirror(s):\n{tried}\n"
        f"Nothing was written to {dest}. Try another mirror (CLI: --mirror URL), or put the original file at "
        f"{dest} yourself."
    )


def _fetch(url: str, out, md5: str, timeout: float, bar: Progress, description: str) -> str | None:
    """Stream ``url`` into ``out``; ``None`` when the bytes have MD5 ``md5``, else the reason they are unusable."""
    request = urllib.request.Request(url, headers={"User-Agent": f"gradstarve/{__version__} (python urllib)"})
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            task = bar.add_task(description, total=expected)
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(task, advance=len(chunk))
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        return f"unreachable ({error.reason})"
    except http.client.IncompleteRead as error:
        return f"connection closed early, truncated after {received + len(error.partial)} bytes"
    except (OSError, http.client.HTTPException, ValueError) as error:
        # ValueError: a malformed URL or an unknown scheme; OSError: resets and timeouts mid-transfer.
        return f"{type(error).__name__}: {error}"
    if expected is not None and received != expected:
        return f"truncated: received {received} of the {expected} bytes announced (Content-Length)"
    actual = digest.hexdigest()
    if actual != md5:
        return f"checksum mismatch: got MD5 {actual} for {received} bytes, expected {md5}"
    return None

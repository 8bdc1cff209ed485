"""Decode image files once into a memory-mapped ``uint8`` array cached on disk, keyed by a hash of what it depends on.

Real image data sets (CelebA) are tens of thousands of JPEGs. Decoding them takes tens of seconds on two cores,
so each preprocessed split is decoded once and stored as ``<cache_dir>/<prefix>-<res>px-<hash>.npy`` of shape
``(n, 3, res, res)`` (``uint8``, channels first so that ``torch.from_numpy`` gives the model's layout), beside a
``.json`` sidecar holding the full key and the row order. Later loads open it with ``mmap_mode="r"`` in
milliseconds. The hash covers every key part the caller gives (the data root, the label files' contents, the
images' names and contents) plus the preprocessing (resolution, crop), so changing any of them makes a new file
rather than silently reusing a stale one. The sidecar also holds the SHA-256 of the ``.npy`` file, checked on
every load (a third of a second per 300 MB): a damaged cache is decoded again, never used. Old files are never
deleted automatically.

Preprocessing is the one of Sagawa et al. (2019) for CelebA (``torchvision`` ``CenterCrop(178)`` then
``Resize(res)``), done with Pillow: centre crop of side ``crop`` (the top/left offset is ``(size - crop) // 2``),
then a bilinear, antialiased resize to ``res x res``. Decoding runs in a thread pool: Pillow releases the GIL while
decoding and resizing, so threads scale across cores without the start-up cost of worker processes.

Default cache folder: ``$XDG_CACHE_HOME/gradstarve/image-cache`` (``~/.cache/gradstarve/image-cache`` when unset).
It is not inside the data set's folder, which is often read-only (a shared data folder), and it is a subfolder so
that it never mixes with the per-data-set folders of a default data root ``~/.cache/gradstarve/<name>``; pass
``cache_dir`` to choose another. Files are about ``n * 3 * res**2`` bytes (CelebA subset at 64 x 64: 310 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gradstarve.data.errors import CorruptDataError, MissingDataError

#: Bumped whenever the preprocessing or the file layout changes, so that old caches are not reused.
CACHE_FORMAT_VERSION = 2  # 2: the sidecar holds the SHA-256 of the array, checked on every load


class ImageFileMissingError(MissingDataError):
    """An image that the metadata lists is not on disk (a :class:`MissingDataError`, hence a ``FileNotFoundError``)."""


class ImageDecodeError(CorruptDataError):
    """An image file exists but Pillow cannot decode it (a :class:`CorruptDataError`, hence a ``ValueError``)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gradstarve/image-cache`` (``~/.cache/...`` when ``XDG_CACHE_HOME`` is unset or empty)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gradstarve" / "image-cache"


def preprocess_image(path: Path | str, resolution: int, crop: int | None) -> np.ndarray:
    """Decode one image to RGB, centre-crop it to ``crop x crop`` (``None``: no crop) and resize to a square.

    Returns:
        ``(3, resolution, resolution)`` ``uint8`` array, channels first.

    Raises:
        ImageFileMissingError: the file does not exist.
        ImageDecodeError: Pillow cannot read it, or ``crop`` is larger than the image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise ImageFileMissingError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ImageDecodeError(f"cannot decode image {path}: {error}") from None
    if crop is not None:
        width, height = rgb.size
        if crop > min(width, height):
            raise ImageDecodeError(f"crop={crop} is larger than image {path} of size {width}x{height}")
        left, top = (width - crop) // 2, (height - crop) // 2
        rgb = rgb.crop((left, top, left + crop, top + crop))
    # Crop first, then resize: resizing with a ``box`` would let the filter read pixels outside the crop.
    rgb = rgb.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def cache_key_digest(key: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``key`` (sorted keys); ``key`` must be JSON-serialisable."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks (about 0.1 s per 100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_images(
    paths: Sequence[Path],
    *,
    key: Mapping[str, object],
    resolution: int,
    crop: int | None,
    cache_dir: Path | str | None = None,
    prefix: str = "images",
    workers: int | None = None,
    progress: bool = True,
    description: str = "decoding images",
) -> tuple[np.ndarray, Path, bool]:
    """The images at ``paths`` preprocessed by :func:`preprocess_image`, from the cache or decoded now and cached.

    Args:
        paths: image files, in the row order of the result.
        key: what the images depend on besides the preprocessing (e.g. the resolved data root, digests of the label
            files, the split name, the names and sizes of the images). Must be JSON-serialisable. The
            resolution, crop, ``len(paths)`` and :data:`CACHE_FORMAT_VERSION` are added to it.
        resolution: side of the square output, in pixels (>= 1).
        crop: side of the centre crop taken before resizing, or ``None`` for no crop.
        cache_dir: folder for the cache files (created if needed); default :func:`default_cache_dir`.
        prefix: start of the file name, for humans browsing the folder (e.g. ``"celeba-train"``).
        workers: decoding threads; default ``os.cpu_count()``; ``0`` or ``1`` decodes in the calling thread.
        progress: show a rich progress bar on stderr while decoding.
        description: the progress bar's label.

    Returns:
        ``(images, path, from_cache)``: a read-only ``(n, 3, resolution, resolution)`` ``uint8`` memory map, the
        ``.npy`` file it maps, and whether it was already cached (``False``: it was decoded by this call). With
        no paths the array is empty, nothing is written and ``from_cache`` is ``True``.
        Cost when decoding: about 0.5 ms per 178 x 218 JPEG per core; from the cache: milliseconds.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1 pixel, got {resolution}")
    if crop is not None and crop < 1:
        raise ValueError(f"crop must be >= 1 pixel or None, got {crop}")
    if not prefix or any(char in prefix for char in "/\\"):
        raise ValueError(f"prefix must be a non-empty file-name part without slashes, got {prefix!r}")
    full_key = {
        **key,
        "format_version": CACHE_FORMAT_VERSION,
        "resolution": int(resolution),
        "crop": None if crop is None else int(crop),
        "n": len(paths),
    }
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = f"{prefix}-{resolution}px-{cache_key_digest(full_key)[:20]}"
    array_path, sidecar_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    shape = (len(paths), 3, resolution, resolution)

    if not paths:  # an empty split: nothing to decode or cache (``np.memmap`` cannot map an empty file)
        return np.zeros(shape, dtype=np.uint8), array_path, True
    cached = _open_cached(array_path, sidecar_path, full_key, shape)
    if cached is not None:
        return cached, array_path, True

    folder.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name and rename: a crash or a concurrent run never leaves a half-written cache behind.
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".npy.tmp")
    os.close(handle)
    try:
        images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        _decode_into(images, paths, resolution, crop, workers, progress, description)
        images.flush()
        del images
        _make_readable(temporary)
        os.replace(temporary, array_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    sidecar = {"key": full_key, "shape": list(shape), "files": [Path(p).name for p in paths]}
    sidecar["sha256"] = file_digest(array_path)
    _write_json(sidecar_path, sidecar)
    cached = _open_cached(array_path, sidecar_path, full_key, shape)
    if cached is None:  # pragma: no cover - only if another process corrupts the file between the two lines
        raise RuntimeError(f"the cache file {array_path} just written cannot be read back")
    return cached, array_path, False


def _open_cached(
    array_path: Path, sidecar_path: Path, key: Mapping[str, object], shape: tuple[int, ...]
) -> np.ndarray | None:
    """The cached array if both files exist and agree with ``key`` and ``shape``, else ``None`` (rebuild)."""
    if not (array_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text())
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    # The JSON round trip turns tuples into lists; compare canonical forms.
    same_key = json.dumps(sidecar.get("key"), sort_keys=True, default=str) == json.dumps(
        key, sort_keys=True, default=str
    )
    if not same_key or images.shape != shape or images.dtype != np.uint8:
        return None
    if sidecar.get("sha256") != file_digest(array_path):  # a damaged or edited cache file: decode again
        return None
    return images


def _decode_into(
    out: np.ndarray,
    paths: Sequence[Path],
    resolution: int,
    crop: int | None,
    workers: int | None,
    progress: bool,
    description: str,
) -> None:
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task(description, total=len(paths))

        def decode(index: int) -> None:
            # Looked up at call time so that tests can count decodes by patching ``preprocess_image``.
            out[index] = preprocess_image(paths[index], resolution, crop)

        if workers <= 1:
            for index in range(len(paths)):
                decode(index)
                bar.advance(task)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(decode, range(len(paths))):
                    bar.advance(task)


def _write_json(path: Path, payload: Mapping[str, object]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".json.tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream)
    _make_readable(temporary)
    os.replace(temporary, path)


def _make_readable(path: str | Path) -> None:
    # mkstemp creates files as 0600; give them the usual umask-derived mode so a shared cache folder works.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)

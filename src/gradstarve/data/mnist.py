"""MNIST from its original files: IDX (gzipped or raw) or a Keras-style ``mnist.npz``, checksums verified.

Files live in ``<data root>/mnist/`` (see :mod:`gradstarve.data.paths`) under their original names:

=============================== =========================== ===========================================
file                            split / kind                MD5 of the ``.gz`` (as published)
=============================== =========================== ===========================================
``train-images-idx3-ubyte.gz``  train images (60,000)       ``f68b3c2dcbeaaa9fbdd348bbdeb94873``
``train-labels-idx1-ubyte.gz``  train labels                ``d53e105ee54ea40749a09fcbcd1e9432``
``t10k-images-idx3-ubyte.gz``   test images (10,000)        ``9fb629c4189551a2d022fa330f9573f3``
``t10k-labels-idx1-ubyte.gz``   test labels                 ``ec29112dd5afa0611ce80d1b7f02629c``
=============================== =========================== ===========================================

For each file the loader takes, in order, the ``.gz``, else the uncompressed file of the same name without ``.gz``,
else ``mnist.npz`` with arrays ``x_train, y_train, x_test, y_test`` (the Keras layout). Verification: a ``.gz`` or
raw IDX file must have the MD5 of the original (the raw MD5s are those of the decompressed originals); an ``.npz``
has no canonical bytes (zip timestamps, compression), so its arrays are checked instead: the SHA-256 of each array's
``uint8`` bytes must equal that of the original IDX payload. Gzip is recognised by its magic bytes, not the name.

IDX format (LeCun et al.): a 4-byte big-endian magic ``0x0000TTDD`` (``TT`` the element type, 0x08 = uint8;
``DD`` the number of dimensions), ``DD`` big-endian uint32 sizes, then the elements in C order. Images are
``0x00000803`` (n, 28, 28), labels ``0x00000801`` (n,). :func:`parse_idx` checks every part of that and says what is
wrong with a truncated or corrupt file.

Nothing is downloaded implicitly: :func:`download_mnist` (CLI ``gradstarve data download mnist``) fetches the four
``.gz`` files from :data:`MNIST_MIRRORS`, and every error for a missing or corrupt file names that command.
Cost: loading the 60,000 training images is one 9.9 MB read, an MD5 and a gzip inflate to 47 MB (well under a
second).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradstarve.data.download import download, md5_of_file
from gradstarve.data.errors import CorruptDataError, DataError, MissingDataError
from gradstarve.data.paths import dataset_dir, download_command

DATASET = "mnist"
NPZ_NAME = "mnist.npz"
IMAGE_SHAPE = (28, 28)
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class MnistFile:
    """One of the four original MNIST files and the checksums that identify it.

    Attributes:
        split: ``"train"`` or ``"test"``.
        kind: ``"images"`` or ``"labels"``.
        name: original file name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
        count: number of examples.
        gz_md5: MD5 of the original ``.gz`` (published with the data set).
        raw_md5: MD5 of the decompressed original.
        content_sha256: SHA-256 of the array's ``uint8`` bytes in C order (the IDX payload after the header).
    """

    split: str
    kind: str
    name: str
    count: int
    gz_md5: str
    raw_md5: str
    content_sha256: str

    @property
    def gz_name(self) -> str:
        return f"{self.name}.gz"

    @property
    def npz_key(self) -> str:
        return f"{'x' if self.kind == 'images' else 'y'}_{self.split}"

    @property
    def description(self) -> str:
        return f"MNIST {self.split} {self.kind}"


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train",
        "images",
        "train-images-idx3-ubyte",
        60_000,
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
        "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    ),
    MnistFile(
        "train",
        "labels",
        "train-labels-idx1-ubyte",
        60_000,
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
        "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    ),
    MnistFile(
        "test",
        "images",
        "t10k-images-idx3-ubyte",
        10_000,
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
        "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    ),
    MnistFile(
        "test",
        "labels",
        "t10k-labels-idx1-ubyte",
        10_000,
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
        "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    ),
)
SPLITS = ("train", "test")


def mnist_file(split: str, kind: str) -> MnistFile:
    """The :class:`MnistFile` of ``split`` (``"train"``/``"test"``) and ``kind`` (``"images"``/``"labels"``)."""
    for entry in MNIST_FILES:
        if entry.split == split and entry.kind == kind:
            return entry
    raise ValueError(f"split must be one of {SPLITS} and kind 'images' or 'labels'; got split={split!r}, kind={kind!r}")


# ---------------------------------------------------------------------------------------------------------------------
# IDX parsing (pure)


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one uncompressed IDX file into a native-endian numpy array of the stored shape.

    Raises:
        CorruptDataError: naming ``source``, when the magic number, the type code or the dimensions are invalid, or
            the data is shorter (truncated) or longer (trailing bytes) than the header announces.
    """
    if len(data) < 4:
        raise CorruptDataError(f"{source}: {len(data)} bytes is too short for an IDX file (4-byte magic number)")
    if data[0] != 0 or data[1] != 0:
        raise CorruptDataError(
            f"{source}: not an IDX file: the magic number 0x{data[:4].hex()} should start with two zero bytes"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02x}" for code in _IDX_TYPES)
        raise CorruptDataError(f"{source}: unknown IDX element type 0x{type_code:02x} (known: {known})")
    if ndim == 0:
        raise CorruptDataError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header} header bytes, the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise CorruptDataError(
            f"{source}: truncated: the header announces shape {shape} ({expected} bytes of data) but only "
            f"{actual} bytes follow it"
        )
    if actual > expected:
        raise CorruptDataError(
            f"{source}: {actual - expected} unexpected bytes after the {shape} array that the header announces"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _decompress(data: bytes, source: str) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptDataError(f"{source}: damaged or truncated gzip data ({error})") from None


def read_idx(path: str | os.PathLike, md5: str | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or raw (recognised by its magic bytes), optionally checking the file's MD5 first.

    Raises:
        MissingDataError: ``path`` does not exist.
        CorruptDataError: the MD5 differs from ``md5``, the gzip stream is damaged, or :func:`parse_idx` fails.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingDataError(f"{path}: no such file") from None
    if md5 is not None:
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual != md5.lower():
            raise CorruptDataError(f"{path}: MD5 {actual} differs from the expected {md5.lower()}")
    return parse_idx(_decompress(data, str(path)), str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Loading from a data root


def _locate(entry: MnistFile, folder: Path) -> tuple[Path, str] | None:
    """The file holding ``entry`` in ``folder`` and its format (``"gz"``, ``"raw"``, ``"npz"``), in that priority."""
    for path, form in ((folder / entry.gz_name, "gz"), (folder / entry.name, "raw"), (folder / NPZ_NAME, "npz")):
        if path.is_file():
            return path, form
    return None


def _check_contents(entry: MnistFile, array: np.ndarray, path: Path, verify: bool, fix: str) -> np.ndarray:
    """Shape, dtype and value checks (always) and the content SHA-256 (``verify``) of one decoded array."""
    where = f"{path} ({entry.description})"
    if entry.kind == "images":
        if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE or array.dtype != np.uint8:
            raise CorruptDataError(
                f"{where}: expected uint8 images of shape (n, 28, 28), got {array.dtype} {array.shape}. Fix: {fix}"
            )
    else:
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise CorruptDataError(
                f"{where}: expected integer labels of shape (n,), got {array.dtype} {array.shape}. Fix: {fix}"
            )
        if array.size and (array.min() < 0 or array.max() > 9):
            raise CorruptDataError(
                f"{where}: labels must be digits 0-9, found {array.min()}..{array.max()}. Fix: {fix}"
            )
        array = array.astype(np.uint8)
    if verify:
        actual = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if actual != entry.content_sha256:
            raise CorruptDataError(
                f"{where}: the array's SHA-256 {actual} differs from the original's {entry.content_sha256}; "
                f"the file holds other data. Fix: {fix} (or pass verify=False for a deliberately different copy)"
            )
    return array


def _read_npz_array(path: Path, key: str, fix: str) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CorruptDataError(f"{path}: a single .npy array, not an .npz archive. Fix: {fix}")
        with archive:
            array = archive[key] if key in archive.files else None
            files = sorted(archive.files)
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise CorruptDataError(f"{path}: not a readable .npz archive ({error}). Fix: {fix}") from None
    if array is None:
        raise CorruptDataError(
            f"{path}: no array {key!r} (it has {files}); expected the Keras layout x_train, y_train, x_test, y_test. "
            f"Fix: {fix}"
        )
    return array


def read_mnist_file(
    entry: MnistFile, data_root: str | os.PathLike | None = None, *, verify: bool = True
) -> tuple[np.ndarray, Path]:
    """Read one original MNIST file (see the module docstring for where it is looked for) and verify it.

    Returns:
        ``(array, path)``: images ``uint8 (n, 28, 28)`` or labels ``uint8 (n,)``, and the file they came from.

    Raises:
        MissingDataError: none of the accepted files exists; the message names them, the expected MD5 and the
            download command.
        CorruptDataError: a checksum, the header or the contents are wrong; the message says which, and how to fix.
    """
    folder = dataset_dir(DATASET, data_root)
    fix = download_command(DATASET, data_root)
    found = _locate(entry, folder)
    if found is None:
        raise MissingDataError(
            f"{entry.description} not found: looked for {folder / entry.gz_name} (MD5 {entry.gz_md5}), "
            f"{folder / entry.name} and {folder / NPZ_NAME}. Nothing is downloaded implicitly; fetch the files "
            f"with: {fix}"
        )
    path, form = found
    if form == "npz":
        return _check_contents(entry, _read_npz_array(path, entry.npz_key, fix), path, verify, fix), path
    data = path.read_bytes()
    if verify:
        expected = entry.gz_md5 if form == "gz" else entry.raw_md5
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise CorruptDataError(
                f"{path}: MD5 {actual} does not match the original {path.name} (MD5 {expected}); the file is "
                f"truncated, damaged or a different file. Fix: {fix}"
            )
    try:
        array = parse_idx(_decompress(data, str(path)), str(path))
    except CorruptDataError as error:
        raise CorruptDataError(f"{error}. Fix: {fix}") from None
    return _check_contents(entry, array, path, False, fix), path


def load_mnist(
    data_root: str | os.PathLike | None = None, split: str = "train", *, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and digit labels of an MNIST split, read from ``<data root>/mnist``.

    Args:
        data_root: see :func:`gradstarve.data.paths.resolve_data_root` (argument, ``$GRADSTARVE_DATA``, cache dir).
        split: ``"train"`` (60,000 images) or ``"test"`` (the 10,000 ``t10k`` images).
        verify: check every file against the original's checksum (see the module docstring). Switch off only for a
            deliberately different copy in the same format.

    Returns:
        ``(images, digits)``: ``uint8 (n, 28, 28)`` pixel intensities 0-255 and ``int64 (n,)`` digits 0-9.

    Raises:
        MissingDataError, CorruptDataError: see :func:`read_mnist_file`; both name the fixing command.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, images_path = read_mnist_file(mnist_file(split, "images"), data_root, verify=verify)
    digits, digits_path = read_mnist_file(mnist_file(split, "labels"), data_root, verify=verify)
    if len(images) != len(digits):
        raise CorruptDataError(
            f"{images_path} holds {len(images)} images but {digits_path} holds {len(digits)} labels. "
            f"Fix: {download_command(DATASET, data_root)}"
        )
    return torch.from_numpy(images), torch.from_numpy(digits.astype(np.int64))


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one MNIST file: ``status`` is ``"ok"``, ``"missing"`` or ``"corrupt"``."""

    entry: MnistFile
    status: str
    path: Path | None
    message: str = ""


def check_mnist(data_root: str | os.PathLike | None = None) -> list[FileCheck]:
    """Verify every MNIST file in the data root (the work behind ``gradstarve data verify mnist``); never raises for
    a bad file, reports it."""
    checks = []
    for entry in MNIST_FILES:
        try:
            _, path = read_mnist_file(entry, data_root, verify=True)
            checks.append(FileCheck(entry, "ok", path))
        except MissingDataError as error:
            checks.append(FileCheck(entry, "missing", None, str(error)))
        except CorruptDataError as error:
            found = _locate(entry, dataset_dir(DATASET, data_root))
            checks.append(FileCheck(entry, "corrupt", found[0] if found else None, str(error)))
    return checks


@dataclass(frozen=True)
class Fetched:
    """One file handled by :func:`download_mnist`: ``downloaded`` is False when a verified copy was already there."""

    path: Path
    downloaded: bool


def download_mnist(
    data_root: str | os.PathLike | None = None,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    *,
    force: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> list[Fetched]:
    """Fetch the four original ``.gz`` files into ``<data root>/mnist``, each verified against its MD5.

    A file already present with the right MD5 is kept (unless ``force``); a present but corrupt one is replaced.
    Each file is tried on ``mirrors`` in order (a mirror is a folder URL; the file name is appended).

    Raises:
        ValueError: no mirrors.
        DownloadError: a file could not be fetched from any mirror (files fetched before it are kept: each is
            verified on its own).
    """
    mirrors = [str(mirror) for mirror in mirrors]
    if not mirrors:
        raise ValueError("mirrors: need at least one mirror URL")
    folder = dataset_dir(DATASET, data_root)
    fetched = []
    for entry in MNIST_FILES:
        dest = folder / entry.gz_name
        if not force and dest.is_file() and md5_of_file(dest) == entry.gz_md5:
            fetched.append(Fetched(dest, False))
            continue
        urls = [mirror.rstrip("/") + "/" + entry.gz_name for mirror in mirrors]
        download(urls, dest, entry.gz_md5, timeout=timeout, progress=progress)
        fetched.append(Fetched(dest, True))
    return fetched

"""CelebA (Liu et al., 2015) as the worst-group benchmark of the paper's Table 2 (Sec. 4, App. A.3).

Task (Sagawa et al., 2019): classify hair colour, ``y = Blond_Hair`` (0 dark, 1 blond), while the spurious
attribute ``a = Male`` (0 female, 1 male) is correlated with it; the four groups are ``group = 2 y + a``:
``0 "dark, female"``, ``1 "dark, male"``, ``2 "blond, female"``, ``3 "blond, male"`` (the rare one: 0.85 % of the
full training set). Any other (target, attribute) pair of the 40 CelebA attributes can be chosen; the group names
are then ``"not T, not A"`` ... ``"T, A"``.

**Root layouts** (``layout="auto"`` takes the first that is present). ``root`` is the CelebA folder itself or a
data root holding it as ``root/celeba`` (the project's one-folder-per-data-set convention, e.g. ``../shared/data``):

1. ``metadata`` -- ``ROOT/metadata.csv`` (one row per image of a subset; columns ``image_id``, ``split`` (0 train, 1
   val, 2 test, or the words), attribute columns as +1/-1; an ``identity`` column is ignored) with the JPEGs in
   ``ROOT/img_align_celeba/``. Every listed image must exist (``missing_images="error"``).
2. ``official`` -- ``ROOT/list_attr_celeba.txt`` (or ``ROOT/list_attr_celeba.zip`` holding it),
   ``ROOT/list_eval_partition.txt`` (``<id> <0|1|2>`` per line; CRLF line ends and extra blanks are fine) and
   ``ROOT/img_align_celeba/<id>.jpg``. Only the images present on disk are used (``missing_images="skip"``), so a
   partial copy works; how many listed images were skipped is in each split's ``metadata``.

Images keep the order of the label file. Nothing is ever downloaded.

**Inputs.** Each image is centre-cropped to 178 x 178 and resized to ``resolution`` x ``resolution`` (bilinear,
antialiased; Sagawa et al.'s preprocessing), see :mod:`gradstarve.data.image_cache`. ``x`` is ``(n, 3, res, res)``
in ``[0, 1]`` (``float32`` by default), **not** mean/std-normalised: the ResNets of :mod:`gradstarve.models.resnet`
apply the ImageNet normalisation themselves, so augmentation here works on plain pixels. The decoded ``uint8``
pixels are cached once per (root, label files, images, split, resolution, crop) under
``$XDG_CACHE_HOME/gradstarve/image-cache`` (default ``~/.cache/gradstarve/image-cache``) or ``cache_dir``; a later
load takes a second or two (parsing the label files, hashing them, mapping the cache). Memory:
``n * 3 * res**2 * 4`` bytes as ``float32`` (the 25k-image subset at 64 x 64: 1.2 GB; at 224 x 224: 15 GB, so pass
``dtype=torch.uint8`` there and convert per batch with :func:`to_unit_float`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from gradstarve.data.base import LabelledData
from gradstarve.data.errors import CorruptDataError, MissingDataError
from gradstarve.data.image_cache import cached_images, file_digest

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
"""The 40 binary attributes, in the column order of the official ``list_attr_celeba.txt``."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names; their codes in ``list_eval_partition.txt`` are their positions (0 train, 1 val, 2 test)."""

IMAGE_FOLDER = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
ATTRIBUTE_ZIP = "list_attr_celeba.zip"
PARTITION_FILE = "list_eval_partition.txt"
METADATA_FILE = "metadata.csv"
ORIGINAL_CROP = 178
"""Side of the centre crop of the 178 x 218 aligned images (Sagawa et al.: ``CenterCrop(min(178, 218))``)."""

# Readable names of the two values of an attribute, for group names; other attributes get "not A" / "A".
_VALUE_NAMES: dict[str, tuple[str, str]] = {"Blond_Hair": ("dark", "blond"), "Male": ("female", "male")}
_NON_ATTRIBUTE_COLUMNS = ("image_id", "split", "identity")

HOW_TO_GET_CELEBA = (
    "CelebA is never downloaded by gradstarve. Get the aligned-and-cropped images (img_align_celeba.zip, unpacked "
    "to ROOT/img_align_celeba/), list_attr_celeba.txt and list_eval_partition.txt from the CelebA authors' page "
    "(Liu et al., 2015, 'Large-scale CelebFaces Attributes') and put them in ROOT; or give a subset as "
    "ROOT/metadata.csv (image_id, split, attributes as +1/-1) beside ROOT/img_align_celeba/."
)


class CelebAFormatError(CorruptDataError):
    """A CelebA label file is malformed; the message names the file and the line. A :class:`CorruptDataError`
    (hence also a ``ValueError``)."""


class CelebAFileNotFoundError(MissingDataError):
    """A file that a CelebA root needs is missing; the message says which and how to get CelebA. A
    :class:`MissingDataError` (hence also a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class CelebAIndex:
    """The images of a CelebA root that will be used, with their split and all their attributes.

    Attributes:
        root: the resolved data root.
        layout: ``"metadata"`` or ``"official"`` (see the module docstring).
        image_ids: file names inside ``root / "img_align_celeba"``, e.g. ``"000001.jpg"``, in label-file order.
        split: ``(n,)`` int8 split code, 0 train, 1 val, 2 test.
        attribute_names: names of the columns of ``attributes``.
        attributes: ``(n, k)`` int8 attribute values in ``{-1, +1}``.
        label_files: the files the labels were read from (their contents key the image cache).
        n_listed: images listed in the label files (official layout: all 202,599 of CelebA).
        n_skipped: listed images absent from the image folder and skipped (0 with ``missing_images="error"``).
    """

    root: Path
    layout: str
    image_ids: tuple[str, ...]
    split: np.ndarray
    attribute_names: tuple[str, ...]
    attributes: np.ndarray
    label_files: tuple[Path, ...]
    n_listed: int
    n_skipped: int

    def attribute(self, name: str) -> np.ndarray:
        """``(n,)`` int64 indicator (0/1) of attribute ``name`` being +1; unknown names list the valid ones."""
        if name not in self.attribute_names:
            raise ValueError(f"unknown CelebA attribute {name!r}; valid names: {', '.join(self.attribute_names)}")
        return (self.attributes[:, self.attribute_names.index(name)] > 0).astype(np.int64)


def celeba_group_names(target: str = "Blond_Hair", attribute: str = "Male") -> tuple[str, str, str, str]:
    """Names of groups ``0..3``, where ``group = 2 * target + attribute``, e.g. ``"blond, male"`` for group 3."""
    t0, t1 = _VALUE_NAMES.get(target, (f"not {target}", target))
    a0, a1 = _VALUE_NAMES.get(attribute, (f"not {attribute}", attribute))
    return (f"{t0}, {a0}", f"{t0}, {a1}", f"{t1}, {a0}", f"{t1}, {a1}")


def read_attribute_file(path: Path | str) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Parse the official ``list_attr_celeba.txt``, or a ``.zip`` that holds it.

    Format: line 1 the number of images, line 2 the attribute names, then one line per image:
    ``<image_id> <v_1> ... <v_k>`` with ``v_j`` in ``{-1, 1}``, separated by any blanks; CRLF line ends are fine.

    Returns:
        ``(names, image_ids, values)`` with ``values`` an ``(n, k)`` int8 array. Cost: about 0.5 s for the
        202,599-line official file.

    Raises:
        CelebAFileNotFoundError: the file (or the member of the zip) is missing.
        CelebAFormatError: a malformed line (named by number), a value outside ``{-1, 1}``, or a count that
            disagrees with line 1.
    """
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    where = str(path)
    if len(lines) < 2:
        raise CelebAFormatError(f"{where}: expected a count line and a header line, found {len(lines)} line(s)")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise CelebAFormatError(f"{where}:1: expected the number of images, got {lines[0].strip()!r}") from None
    names = tuple(lines[1].split())
    if not names:
        raise CelebAFormatError(f"{where}:2: expected the attribute names, got an empty line")
    ids: list[str] = []
    rests: list[str] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise CelebAFormatError(
                f"{where}:{number}: expected an image id and {len(names)} attribute values, got {len(fields)} "
                f"field(s): {line.strip()[:80]!r}"
            )
        ids.append(fields[0])
        rests.append(line.split(None, 1)[1])
        line_numbers.append(number)
    if len(ids) != declared:
        raise CelebAFormatError(f"{where}:1: declares {declared} images but {len(ids)} image lines follow")
    # Parsing the ~8 M numbers in C: a per-token int() would take seconds.
    values = np.fromstring(" ".join(rests), dtype=np.int64, sep=" ") if rests else np.zeros(0, np.int64)
    if values.size != len(ids) * len(names) or not np.isin(values, (-1, 1)).all():
        _raise_bad_value(where, names, [rest.split() for rest in rests], line_numbers)
    return names, ids, values.reshape(len(ids), len(names)).astype(np.int8)


def read_partition_file(path: Path | str) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: ``<image_id> <0|1|2>`` per line (any blanks, CRLF fine, blank lines skipped).

    Returns:
        ``{image_id: split code}`` in file order.
    """
    path = Path(path)
    text = _read_text(path)
    partition: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise CelebAFormatError(
                f"{path}:{number}: expected '<image_id> <0|1|2>' (0 train, 1 val, 2 test), got {line.strip()!r}"
            )
        if fields[0] in partition:
            raise CelebAFormatError(f"{path}:{number}: image {fields[0]} is listed twice")
        partition[fields[0]] = int(fields[1])
    return partition


def read_metadata_csv(path: Path | str) -> tuple[tuple[str, ...], list[str], np.ndarray, np.ndarray]:
    """Parse a subset's ``metadata.csv``: ``image_id``, ``split``, then attribute columns as +1/-1.

    ``split`` may be 0/1/2 or train/val/test; an ``identity`` column is ignored; every other column is an
    attribute and must hold +1 or -1 (``1`` and ``-1`` as text).

    Returns:
        ``(names, image_ids, split, values)``: ``split`` ``(n,)`` int8, ``values`` ``(n, k)`` int8.
    """
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = [name.strip() for name in next(reader, [])]
    for required in ("image_id", "split"):
        if required not in header:
            raise CelebAFormatError(f"{path}:1: missing column {required!r}; the header is {header}")
    id_column, split_column = header.index("image_id"), header.index("split")
    attribute_columns = [i for i, name in enumerate(header) if name not in _NON_ATTRIBUTE_COLUMNS]
    names = tuple(header[i] for i in attribute_columns)
    split_codes = {"0": 0, "1": 1, "2": 2, **{name: code for code, name in enumerate(SPLITS)}}
    ids: list[str] = []
    splits: list[int] = []
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    seen: set[str] = set()
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CelebAFormatError(f"{path}:{number}: expected {len(header)} columns, got {len(row)}")
        image_id, split = row[id_column].strip(), row[split_column].strip()
        if split not in split_codes:
            raise CelebAFormatError(f"{path}:{number}: split must be 0/1/2 or train/val/test, got {split!r}")
        if image_id in seen:
            raise CelebAFormatError(f"{path}:{number}: image {image_id} is listed twice")
        seen.add(image_id)
        ids.append(image_id)
        splits.append(split_codes[split])
        rows.append([row[i].strip() for i in attribute_columns])
        line_numbers.append(number)
    values = np.zeros((len(ids), len(names)), dtype=np.int8)
    if rows:
        try:
            parsed = np.asarray(rows).astype(np.int64)
        except ValueError:
            parsed = None
        if parsed is None or not np.isin(parsed, (-1, 1)).all():
            _raise_bad_value(str(path), names, rows, line_numbers)
        values = parsed.astype(np.int8)
    return names, ids, np.asarray(splits, dtype=np.int8), values


def index_celeba(root: Path | str, layout: str = "auto", missing_images: str | None = None) -> CelebAIndex:
    """Read a CelebA root's label files and find which listed images are present (see the module docstring).

    Args:
        root: the CelebA folder, or a data root holding it as ``root / "celeba"`` (e.g. ``../shared/data``).
        layout: ``"auto"`` (``metadata.csv`` if present, else the official files), ``"metadata"`` or ``"official"``.
        missing_images: what to do with listed images that are not on disk: ``"error"`` or ``"skip"``; default
            ``"error"`` for the metadata layout (it lists a subset, so a gap is a mistake) and ``"skip"`` for the
            official one (which lists all 202,599 images, also when only some are present).
    """
    root = Path(root).expanduser()
    if not _holds_celeba(root) and _holds_celeba(root / "celeba"):
        root = root / "celeba"  # a data root holding one folder per data set (gradstarve's convention)
    if not root.is_dir():
        raise CelebAFileNotFoundError(f"CelebA root {root} is not a folder. {HOW_TO_GET_CELEBA}")
    root = root.resolve()
    if layout not in ("auto", "metadata", "official"):
        raise ValueError(f"layout must be 'auto', 'metadata' or 'official', got {layout!r}")
    if layout == "auto":
        layout = "metadata" if (root / METADATA_FILE).is_file() else "official"
    if missing_images is None:
        missing_images = "error" if layout == "metadata" else "skip"
    if missing_images not in ("error", "skip"):
        raise ValueError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
    image_dir = root / IMAGE_FOLDER
    if not image_dir.is_dir():
        raise CelebAFileNotFoundError(f"image folder {image_dir} does not exist. {HOW_TO_GET_CELEBA}")
    present = {entry.name for entry in os.scandir(image_dir) if entry.is_file()}

    if layout == "metadata":
        metadata = root / METADATA_FILE
        names, ids, split, values = read_metadata_csv(metadata)
        label_files: tuple[Path, ...] = (metadata,)
        listed_in = metadata.name
    else:
        attribute_path = _official_attribute_path(root)
        partition_path = root / PARTITION_FILE
        if not partition_path.is_file():
            raise CelebAFileNotFoundError(f"partition file {partition_path} does not exist. {HOW_TO_GET_CELEBA}")
        partition = read_partition_file(partition_path)
        names, attribute_ids, attribute_values = read_attribute_file(attribute_path)
        row_of = {image_id: row for row, image_id in enumerate(attribute_ids)}
        ids = list(partition)
        split = np.fromiter(partition.values(), dtype=np.int8, count=len(partition))
        label_files = (attribute_path, partition_path)
        listed_in = partition_path.name
        absent = [image_id for image_id in ids if image_id in present and image_id not in row_of]
        if absent:
            raise CelebAFormatError(
                f"{len(absent)} image(s) in {image_dir} and {partition_path.name} are absent from "
                f"{attribute_path}: {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}"
            )
        # Rows of images that are present (the others are dropped just below): their attributes are looked up.
        rows = np.fromiter((row_of.get(image_id, -1) for image_id in ids), dtype=np.int64, count=len(ids))
        values = attribute_values[np.maximum(rows, 0)]

    is_present = np.fromiter((image_id in present for image_id in ids), dtype=bool, count=len(ids))
    missing = [image_id for image_id, here in zip(ids, is_present, strict=True) if not here]
    if missing and missing_images == "error":
        raise CelebAFileNotFoundError(
            f"{len(missing)} image(s) listed in {listed_in} are missing from {image_dir}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (pass missing_images='skip' to use "
            "only the images present)"
        )
    keep = np.flatnonzero(is_present)
    if keep.size == 0:
        raise CelebAFormatError(
            f"no CelebA image to use: {listed_in} lists {len(ids)} image(s) and none of them is in {image_dir}. "
            f"{HOW_TO_GET_CELEBA}"
        )
    return CelebAIndex(
        root=root,
        layout=layout,
        image_ids=tuple(ids[i] for i in keep),
        split=split[keep],
        attribute_names=names,
        attributes=values[keep],
        label_files=label_files,
        n_listed=len(ids),
        n_skipped=len(missing),
    )


def load_celeba(
    root: Path | str,
    *,
    resolution: int = 64,
    target: str = "Blond_Hair",
    attribute: str = "Male",
    splits: Sequence[str] = SPLITS,
    crop: int | None = ORIGINAL_CROP,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | str | None = None,
    layout: str = "auto",
    missing_images: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, LabelledData]:
    """CelebA splits for the worst-group task ``y = target`` with spurious ``attribute`` (four groups).

    Args:
        root: the data root (see the module docstring for the layouts).
        resolution: side of the square images fed to the model (paper: 224; CPU preset: 64).
        target, attribute: CelebA attribute names (case-sensitive; unknown names raise a ``ValueError`` that lists
            the valid ones). ``y = 1`` where ``target`` is +1; ``group = 2 y + [attribute is +1]``.
        splits: which of ``"train"``, ``"val"``, ``"test"`` to load.
        crop: centre-crop side before resizing (178: the full width of the aligned images); ``None``: no crop.
        dtype: a floating dtype gives ``x`` in ``[0, 1]``; ``torch.uint8`` keeps the raw 0..255 pixels (4x less
            memory; convert batches with :func:`to_unit_float`).
        cache_dir: where the decoded pixels are cached (default ``$XDG_CACHE_HOME/gradstarve/image-cache``).
        layout, missing_images: see :func:`index_celeba`.
        workers: decoding threads when a split is not cached yet (default: all cores).
        progress: show a progress bar while decoding.

    Returns:
        ``{split: LabelledData}``: ``x`` ``(n, 3, resolution, resolution)``, ``y`` and ``group`` int64, group names
        from :func:`celeba_group_names`, ``name`` ``"celeba/<split>"``, and ``metadata`` with ``group_counts``
        (``{group name: count}``), ``n``, the task, the preprocessing, the layout, the cache file and whether it
        was read from the cache (``from_cache``). Cost: decoding about 0.5 ms per image per core the first time;
        afterwards about a second (parsing the label files, mapping the cache) plus the float conversion.
    """
    if target == attribute:
        raise ValueError(f"target and attribute must differ, both are {target!r}")
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise ValueError(f"splits must be among {SPLITS}, got {list(splits)}")
    if not (dtype == torch.uint8 or dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating dtype or torch.uint8, got {dtype}")
    index = index_celeba(root, layout=layout, missing_images=missing_images)
    y_all = index.attribute(target)
    a_all = index.attribute(attribute)
    group_all = 2 * y_all + a_all
    group_names = celeba_group_names(target, attribute)
    label_digests = {path.name: file_digest(path) for path in index.label_files}
    image_dir = index.root / IMAGE_FOLDER

    result: dict[str, LabelledData] = {}
    for split in splits:
        rows = np.flatnonzero(index.split == SPLITS.index(split))
        ids = [index.image_ids[row] for row in rows]
        paths = [image_dir / image_id for image_id in ids]
        key = {
            "dataset": "celeba",
            "root": str(index.root),
            "label_files": label_digests,
            "split": split,
            "images": _images_digest(paths),
        }
        images, cache_file, from_cache = cached_images(
            paths,
            key=key,
            resolution=resolution,
            crop=crop,
            cache_dir=cache_dir,
            prefix=f"celeba-{split}",
            workers=workers,
            progress=progress,
            description=f"CelebA {split}: decoding {len(paths)} images at {resolution}x{resolution}",
        )
        group = torch.from_numpy(group_all[rows].copy())
        counts = torch.bincount(group, minlength=4).tolist()
        metadata = {
            "dataset": "celeba",
            "split": split,
            "target": target,
            "attribute": attribute,
            "n": len(rows),
            "group_counts": dict(zip(group_names, counts, strict=True)),
            "resolution": resolution,
            "crop": crop,
            "x_range": "0..255 (uint8)" if dtype == torch.uint8 else "[0, 1] (not mean/std-normalised)",
            "root": str(index.root),
            "layout": index.layout,
            "n_listed_images": index.n_listed,
            "n_skipped_missing_images": index.n_skipped,
            "cache_file": str(cache_file),
            "from_cache": from_cache,
        }
        result[split] = LabelledData(
            x=_to_tensor(images, dtype),
            y=torch.from_numpy(y_all[rows].copy()),
            group=group,
            group_names=group_names,
            name=f"celeba/{split}",
            metadata=metadata,
        )
    return result


def split_attributes(
    root: Path | str, split: str, names: Sequence[str], *, layout: str = "auto", missing_images: str | None = None
) -> dict[str, np.ndarray]:
    """``{name: (n,) int64 0/1}``: the attributes ``names`` of the images of ``split``, in the order
    :func:`load_celeba` returns that split (for aligning features with attributes beyond the task's two)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    index = index_celeba(root, layout=layout, missing_images=missing_images)
    rows = np.flatnonzero(index.split == SPLITS.index(split))
    return {name: index.attribute(name)[rows] for name in names}


def to_unit_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``uint8`` pixels 0..255 -> ``dtype`` in ``[0, 1]``; floating input is returned unchanged (cast to ``dtype``)."""
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be uint8 pixels or floating point, got {x.dtype}")
    return x.to(dtype)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    flip_probability: float = 0.5,
    crop_scale: tuple[float, float] | None = None,
    crop_ratio: tuple[float, float] = (1.0, 4.0 / 3.0),
) -> torch.Tensor:
    """Train-time augmentation of a batch, drawn independently per example from ``generator``.

    Horizontal flip with probability ``flip_probability``; with ``crop_scale`` also a random resized crop (as
    torchvision's ``RandomResizedCrop``, which Sagawa et al. use for CelebA with ``scale=(0.7, 1.0)``,
    ``ratio=(1.0, 4/3)``): a box of area fraction ``s ~ U(crop_scale)`` and aspect ``w/h = r``, ``log r ~
    U(log crop_ratio)``, at a uniform position, resampled bilinearly to the input size. Unlike torchvision, a box
    that does not fit is clamped to the image instead of redrawn (no data-dependent loop, so it stays batched).

    Args:
        x: ``(n, C, H, W)`` floating images (e.g. in ``[0, 1]``); not modified.
        generator: source of randomness (on any device; the draws are moved to ``x``'s device).
        flip_probability: in ``[0, 1]``.
        crop_scale: ``(low, high)`` with ``0 < low <= high <= 1``, or ``None`` for no crop.
        crop_ratio: ``(low, high)`` with ``0 < low <= high``.

    Returns:
        ``(n, C, H, W)`` augmented copy, same dtype and device. Cost: O(n C H W), one ``grid_sample`` when cropping.
    """
    if x.dim() != 4 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a floating (n, C, H, W) batch, got shape {tuple(x.shape)} and dtype {x.dtype}")
    if not 0.0 <= flip_probability <= 1.0:
        raise ValueError(f"flip_probability must lie in [0, 1], got {flip_probability}")
    n = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device).to(x.device, x.dtype)

    flip = uniform(n) < flip_probability
    if crop_scale is None:
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    if not 0.0 < crop_ratio[0] <= crop_ratio[1]:
        raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio}")
    draws = uniform(n, 4)
    area = low + (high - low) * draws[:, 0]
    log_low, log_high = np.log(crop_ratio[0]), np.log(crop_ratio[1])
    ratio = torch.exp(log_low + (log_high - log_low) * draws[:, 1])
    # Box width and height as fractions of the image; the normalised grid spans 2, so the centre moves in +-(1 - w).
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1.0 - width) * (2.0 * draws[:, 2] - 1.0)
    centre_y = (1.0 - height) * (2.0 * draws[:, 3] - 1.0)
    sign = torch.where(flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    return functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _read_text(path: Path) -> str:
    """A label file's text; a ``.zip`` is read through the member with the same stem and a ``.txt`` / ``.csv`` end."""
    if not path.is_file():
        raise CelebAFileNotFoundError(f"{path} does not exist. {HOW_TO_GET_CELEBA}")
    if path.suffix.lower() != ".zip":
        return path.read_text(encoding="utf-8", errors="strict")
    with zipfile.ZipFile(path) as archive:
        members = [
            name
            for name in archive.namelist()
            if Path(name).stem == path.stem and Path(name).suffix in (".txt", ".csv")
        ]
        if not members:
            raise CelebAFileNotFoundError(
                f"{path} holds no {path.stem}.txt (members: {', '.join(archive.namelist()[:10])})"
            )
        return archive.read(members[0]).decode("utf-8")


def _holds_celeba(folder: Path) -> bool:
    names = (IMAGE_FOLDER, METADATA_FILE, ATTRIBUTE_FILE, ATTRIBUTE_ZIP, PARTITION_FILE)
    return any((folder / name).exists() for name in names)


def _official_attribute_path(root: Path) -> Path:
    for name in (ATTRIBUTE_FILE, ATTRIBUTE_ZIP):
        if (root / name).is_file():
            return root / name
    raise CelebAFileNotFoundError(
        f"neither {root / ATTRIBUTE_FILE} nor {root / ATTRIBUTE_ZIP} exists (and there is no {METADATA_FILE}). "
        f"{HOW_TO_GET_CELEBA}"
    )


def _raise_bad_value(where: str, names: Sequence[str], rows: Sequence[Sequence[str]], line_numbers: Sequence[int]):
    """Find the first value outside ``{-1, 1}`` (slow path, only on error) and raise naming its line and column."""
    for number, row in zip(line_numbers, rows, strict=True):
        for name, value in zip(names, row, strict=True):
            if value not in ("1", "-1", "+1"):
                raise CelebAFormatError(f"{where}:{number}: attribute {name} must be 1 or -1, got {value!r}")
    raise CelebAFormatError(f"{where}: attribute values must be 1 or -1")  # pragma: no cover - defensive


def _images_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the images' names and contents: an image changed in place (even at the same size), added or
    removed changes the cache key. Reads every file once (about a second for the 25,000-image subset)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}:".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _to_tensor(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Copy the (memory-mapped) ``uint8`` pixels into a tensor of ``dtype``, in chunks to bound peak memory."""
    out = torch.empty(images.shape, dtype=dtype)
    for start in range(0, images.shape[0], 2048):
        chunk = torch.from_numpy(np.array(images[start : start + 2048]))
        target = out[start : start + chunk.shape[0]]
        target.copy_(chunk)  # in place: 3x faster than building float temporaries
        if dtype != torch.uint8:
            target.div_(255.0)
    return out

"""CelebA loader on generated fake roots: layouts, groups, splits, errors, the image cache and augmentation."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradstarve.data import image_cache
from gradstarve.data.celeba import (
    CELEBA_ATTRIBUTES,
    CelebAFileNotFoundError,
    CelebAFormatError,
    augment,
    celeba_group_names,
    index_celeba,
    load_celeba,
    read_partition_file,
    to_unit_float,
)

BLOND, MALE = CELEBA_ATTRIBUTES.index("Blond_Hair"), CELEBA_ATTRIBUTES.index("Male")
# (split, blond, male) of each fake image 000001.jpg ... ; every group appears in train.
FAKE = [
    (0, 0, 0),
    (0, 0, 1),
    (0, 1, 0),
    (0, 1, 1),
    (0, 0, 0),
    (0, 1, 0),
    (1, 0, 0),
    (1, 1, 1),
    (1, 0, 1),
    (2, 1, 0),
    (2, 0, 1),
]
SIZE = (20, 24)  # width, height: the 178 x 218 aspect, shrunk; crop=20 plays the role of 178


def _image_id(i: int) -> str:
    return f"{i + 1:06d}.jpg"


def _colour(i: int) -> tuple[int, int, int]:
    return (20 * i, 250 - 20 * i, 100)


def _attributes(i: int) -> list[int]:
    """All 40 values of image ``i``; Blond_Hair and Male as in FAKE (images past FAKE: listed, not on disk)."""
    values = [(-1) ** (i + j) for j in range(len(CELEBA_ATTRIBUTES))]
    if i < len(FAKE):
        _, blond, male = FAKE[i]
        values[BLOND], values[MALE] = 2 * blond - 1, 2 * male - 1
    return values


def _attribute_text(n_listed: int, newline: str) -> str:
    lines = [str(n_listed), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{_image_id(i)} " + " ".join(f"{v:2d}" for v in _attributes(i)) for i in range(n_listed)]
    return newline.join(lines) + newline


def _write_images(root: Path, count: int) -> None:
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", SIZE, _colour(i)).save(folder / _image_id(i), quality=100, subsampling=0)


def make_official_root(root: Path, *, as_zip: bool = False, newline: str = "\r\n", extra_listed: int = 1) -> Path:
    """All FAKE images on disk; the label files list ``extra_listed`` more images that are not on disk."""
    n_listed = len(FAKE) + extra_listed
    _write_images(root, len(FAKE))
    splits = [split for split, _, _ in FAKE] + [0] * extra_listed
    text = _attribute_text(n_listed, newline)
    if as_zip:
        with zipfile.ZipFile(root / "list_attr_celeba.zip", "w") as archive:
            archive.writestr("list_attr_celeba.txt", text)
    else:
        (root / "list_attr_celeba.txt").write_bytes(text.encode())
    partition = newline.join(f"{_image_id(i)}   {split} " for i, split in enumerate(splits)) + newline
    (root / "list_eval_partition.txt").write_bytes(partition.encode())
    return root


def make_metadata_root(root: Path) -> Path:
    _write_images(root, len(FAKE))
    words = ("train", "val", "test")
    header = ["image_id", "identity", "split", *CELEBA_ATTRIBUTES]
    rows = [",".join(header)]
    for i, (split, _, _) in enumerate(FAKE):
        split_text = words[split] if i % 2 else str(split)  # both spellings are accepted
        rows.append(",".join([_image_id(i), str(100 + i), split_text, *map(str, _attributes(i))]))
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _load(root: Path, tmp_path: Path, **kwargs):
    options = {"resolution": 8, "crop": 20, "cache_dir": tmp_path / "cache", "workers": 0, "progress": False}
    return load_celeba(root, **{**options, **kwargs})


def _expected(split: int) -> tuple[list[int], list[int], list[int]]:
    rows = [i for i, (s, _, _) in enumerate(FAKE) if s == split]
    return rows, [FAKE[i][1] for i in rows], [2 * FAKE[i][1] + FAKE[i][2] for i in rows]


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    original = image_cache.preprocess_image

    def counting(path, resolution, crop):
        calls.append(Path(path).name)
        return original(path, resolution, crop)

    monkeypatch.setattr(image_cache, "preprocess_image", counting)
    return calls


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_official_layout_gives_the_listed_splits_labels_and_groups(tmp_path, as_zip, newline):
    root = make_official_root(tmp_path / "celeba", as_zip=as_zip, newline=newline)
    data = _load(root, tmp_path)
    assert list(data) == ["train", "val", "test"]
    for code, split in enumerate(("train", "val", "test")):
        rows, labels, groups = _expected(code)
        part = data[split]
        assert part.x.shape == (len(rows), 3, 8, 8) and part.x.dtype == torch.float32
        assert part.y.tolist() == labels and part.group.tolist() == groups
        assert part.group_names == ("dark, female", "dark, male", "blond, female", "blond, male")
        assert part.name == f"celeba/{split}"
        counts = np.bincount(groups, minlength=4).tolist()
        assert list(part.metadata["group_counts"].values()) == counts
        assert part.metadata["layout"] == "official"
        assert part.metadata["n_listed_images"] == len(FAKE) + 1 and part.metadata["n_skipped_missing_images"] == 1
        # Rows follow the label file: image i is filled with colour i (JPEG keeps a flat colour within +-3).
        expected = torch.tensor([_colour(i) for i in rows], dtype=torch.float32) / 255
        assert torch.allclose(part.x.mean(dim=(2, 3)), expected, atol=3 / 255)
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0


def test_metadata_csv_layout_matches_the_official_layout(tmp_path):
    official = _load(make_official_root(tmp_path / "official"), tmp_path)
    subset = _load(make_metadata_root(tmp_path / "subset"), tmp_path)
    for split in ("train", "val", "test"):
        assert subset[split].metadata["layout"] == "metadata"
        assert torch.equal(subset[split].y, official[split].y)
        assert torch.equal(subset[split].group, official[split].group)
        assert torch.equal(subset[split].x, official[split].x)
    index = index_celeba(tmp_path / "subset")
    assert "identity" not in index.attribute_names and len(index.attribute_names) == 40


def test_auto_layout_prefers_metadata_csv_and_official_can_be_forced(tmp_path):
    root = make_official_root(tmp_path / "both")
    make_metadata_root(root)
    assert index_celeba(root).layout == "metadata"
    forced = index_celeba(root, layout="official")
    assert forced.layout == "official" and len(forced.image_ids) == len(FAKE) and forced.n_skipped == 1


def test_other_target_and_attribute_pairs(tmp_path):
    root = make_official_root(tmp_path / "celeba")
    data = _load(root, tmp_path, target="Male", attribute="Blond_Hair", splits=("train",))
    train_rows, _, _ = _expected(0)
    assert data["train"].y.tolist() == [FAKE[i][2] for i in train_rows]
    assert data["train"].group.tolist() == [2 * FAKE[i][2] + FAKE[i][1] for i in train_rows]
    assert celeba_group_names("Smiling", "Young") == (
        "not Smiling, not Young",
        "not Smiling, Young",
        "Smiling, not Young",
        "Smiling, Young",
    )
    smiling = _load(root, tmp_path, target="Smiling", attribute="Young", splits=("val",))["val"]
    column = CELEBA_ATTRIBUTES.index("Smiling")
    assert smiling.y.tolist() == [int(_attributes(i)[column] > 0) for i in _expected(1)[0]]


def test_unknown_attribute_lists_the_valid_names(tmp_path):
    root = make_official_root(tmp_path / "celeba")
    with pytest.raises(ValueError, match=r"unknown CelebA attribute 'Blonde_Hair'.*Blond_Hair.*Young"):
        _load(root, tmp_path, target="Blonde_Hair")
    with pytest.raises(ValueError, match="must differ"):
        _load(root, tmp_path, target="Male", attribute="Male")
    with pytest.raises(ValueError, match="splits"):
        _load(root, tmp_path, splits=("training",))


def test_partition_parsing_tolerates_crlf_and_blanks_and_rejects_bad_lines(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_bytes(b"000001.jpg 0\r\n  000002.jpg\t\t2  \r\n\r\n000003.jpg 1\r\n")
    assert read_partition_file(path) == {"000001.jpg": 0, "000002.jpg": 2, "000003.jpg": 1}
    path.write_bytes(b"000001.jpg 0\r\n000002.jpg 3\r\n")
    with pytest.raises(CelebAFormatError, match=r"list_eval_partition.txt:2: expected '<image_id> <0\|1\|2>'"):
        read_partition_file(path)
    path.write_bytes(b"000001.jpg 0\n000001.jpg 1\n")
    with pytest.raises(CelebAFormatError, match=r":2: image 000001.jpg is listed twice"):
        read_partition_file(path)


def _rewrite_attribute_line(root: Path, line_index: int, edit) -> None:
    path = root / "list_attr_celeba.txt"
    lines = path.read_bytes().decode().split("\r\n")
    lines[line_index] = edit(lines[line_index])
    path.write_bytes("\r\n".join(lines).encode())


def test_malformed_attribute_lines_are_named_by_file_and_line(tmp_path):
    root = make_official_root(tmp_path / "short")
    _rewrite_attribute_line(root, 4, lambda line: line.rsplit(" ", 1)[0])  # file line 5: one value short
    with pytest.raises(CelebAFormatError, match=r"list_attr_celeba.txt:5: expected an image id and 40 attribute"):
        _load(root, tmp_path)
    root = make_official_root(tmp_path / "value")
    _rewrite_attribute_line(root, 6, lambda line: line.replace(" 1", " 2", 1))  # file line 7
    with pytest.raises(CelebAFormatError, match=r"list_attr_celeba.txt:7: attribute \w+ must be 1 or -1, got '2'"):
        _load(root, tmp_path)
    root = make_official_root(tmp_path / "count")
    _rewrite_attribute_line(root, 0, lambda line: "99")
    with pytest.raises(CelebAFormatError, match=r"list_attr_celeba.txt:1: declares 99 images but 12"):
        _load(root, tmp_path)
    root = make_official_root(tmp_path / "csv")
    make_metadata_root(root)
    metadata = root / "metadata.csv"
    metadata.write_text(metadata.read_text().replace(",-1\n", ",x\n", 1))
    with pytest.raises(CelebAFormatError, match=r"metadata.csv:2: attribute Young must be 1 or -1, got 'x'"):
        _load(root, tmp_path)


def test_image_absent_from_the_attribute_file_is_an_error(tmp_path):
    root = make_official_root(tmp_path / "celeba")
    path = root / "list_attr_celeba.txt"
    lines = path.read_bytes().decode().split("\r\n")
    del lines[2 + 3]  # 000004.jpg: on disk and in the partition file
    lines[0] = str(len(FAKE))
    path.write_bytes("\r\n".join(lines).encode())
    with pytest.raises(CelebAFormatError, match=r"absent from .*list_attr_celeba.txt: 000004.jpg"):
        _load(root, tmp_path)


def test_missing_files_raise_file_not_found_with_instructions(tmp_path):
    with pytest.raises(CelebAFileNotFoundError, match=r"is not a folder.*never downloaded"):
        _load(tmp_path / "nowhere", tmp_path)
    root = make_official_root(tmp_path / "no-partition")
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"list_eval_partition.txt does not exist.*never downloaded"):
        _load(root, tmp_path)
    root = make_official_root(tmp_path / "no-attributes")
    (root / "list_attr_celeba.txt").unlink()
    with pytest.raises(CelebAFileNotFoundError, match=r"neither .*list_attr_celeba.txt nor .*list_attr_celeba.zip"):
        _load(root, tmp_path)
    root = make_official_root(tmp_path / "no-images")
    for path in (root / "img_align_celeba").iterdir():
        path.unlink()
    (root / "img_align_celeba").rmdir()
    with pytest.raises(CelebAFileNotFoundError, match="img_align_celeba does not exist"):
        _load(root, tmp_path)
    root = tmp_path / "bad-zip"
    make_official_root(root, as_zip=True)
    with zipfile.ZipFile(root / "list_attr_celeba.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing")
    with pytest.raises(CelebAFileNotFoundError, match=r"holds no list_attr_celeba.txt \(members: readme.txt"):
        _load(root, tmp_path)


def test_image_listed_in_metadata_but_missing_on_disk(tmp_path):
    root = make_metadata_root(tmp_path / "celeba")
    (root / "img_align_celeba" / _image_id(7)).unlink()
    with pytest.raises(CelebAFileNotFoundError, match=r"1 image\(s\) listed in metadata.csv are missing .*000008.jpg"):
        _load(root, tmp_path)
    data = _load(root, tmp_path, missing_images="skip", splits=("val",))
    assert len(data["val"]) == 2 and data["val"].metadata["n_skipped_missing_images"] == 1
    # The official layout can be told to insist on every listed image, too.
    official = make_official_root(tmp_path / "official")
    with pytest.raises(CelebAFileNotFoundError, match=r"listed in list_eval_partition.txt are missing.*000012.jpg"):
        _load(official, tmp_path, missing_images="error")


def test_cache_is_reused_without_decoding(tmp_path, decode_counter):
    root = make_official_root(tmp_path / "celeba")
    first = _load(root, tmp_path)
    assert len(decode_counter) == len(FAKE)
    assert not any(part.metadata["from_cache"] for part in first.values())
    files = [Path(part.metadata["cache_file"]) for part in first.values()]
    stamps = [os.stat(path).st_mtime_ns for path in files]
    second = _load(root, tmp_path)
    assert len(decode_counter) == len(FAKE)  # nothing decoded again
    assert all(part.metadata["from_cache"] for part in second.values())
    assert [os.stat(path).st_mtime_ns for path in files] == stamps
    for split in first:
        assert torch.equal(first[split].x, second[split].x)
    cached = np.load(files[0], mmap_mode="r")
    assert isinstance(cached, np.memmap) and cached.dtype == np.uint8 and cached.shape == (6, 3, 8, 8)


def test_cache_is_rebuilt_when_a_key_part_changes(tmp_path, decode_counter):
    root = make_official_root(tmp_path / "celeba")
    base = _load(root, tmp_path, splits=("train",))["train"]
    n_train = len(base)
    assert len(decode_counter) == n_train

    bigger = _load(root, tmp_path, splits=("train",), resolution=12)["train"]
    assert len(decode_counter) == 2 * n_train and bigger.x.shape[-1] == 12
    assert bigger.metadata["cache_file"] != base.metadata["cache_file"]

    uncropped = _load(root, tmp_path, splits=("train",), crop=None)["train"]
    assert len(decode_counter) == 3 * n_train and uncropped.metadata["cache_file"] != base.metadata["cache_file"]

    _rewrite_attribute_line(root, 2, lambda line: line.replace("-1", " 1", 1))  # same size, new contents
    relabelled = _load(root, tmp_path, splits=("train",))["train"]
    assert len(decode_counter) == 4 * n_train and not relabelled.metadata["from_cache"]
    assert relabelled.metadata["cache_file"] != base.metadata["cache_file"]

    Image.new("RGB", SIZE, (1, 2, 3)).save(root / "img_align_celeba" / _image_id(0), quality=10)
    replaced = _load(root, tmp_path, splits=("train",))["train"]
    assert len(decode_counter) == 5 * n_train and not replaced.metadata["from_cache"]

    again = _load(root, tmp_path, splits=("train",))["train"]
    assert len(decode_counter) == 5 * n_train and again.metadata["from_cache"]


def test_a_cache_file_that_does_not_match_its_key_is_rebuilt(tmp_path, decode_counter):
    root = make_official_root(tmp_path / "celeba")
    path = Path(_load(root, tmp_path, splits=("val",))["val"].metadata["cache_file"])
    np.save(path, np.zeros((1, 3, 8, 8), dtype=np.uint8))  # wrong shape: a corrupted or foreign file
    data = _load(root, tmp_path, splits=("val",))["val"]
    assert not data.metadata["from_cache"] and len(decode_counter) == 2 * len(data)


def test_an_image_changed_in_place_at_the_same_size_is_decoded_again(tmp_path, decode_counter):
    root = make_official_root(tmp_path / "celeba")
    before = _load(root, tmp_path, splits=("val",))["val"]
    path = root / "img_align_celeba" / _image_id(next(i for i, (split, _, _) in enumerate(FAKE) if split == 1))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the entropy-coded data: same size, other pixels
    path.write_bytes(bytes(data))
    after = _load(root, tmp_path, splits=("val",))["val"]
    assert not after.metadata["from_cache"] and after.metadata["cache_file"] != before.metadata["cache_file"]


def test_a_damaged_cache_array_is_detected_and_decoded_again(tmp_path, decode_counter):
    root = make_official_root(tmp_path / "celeba")
    first = _load(root, tmp_path, splits=("val",))["val"]
    path = Path(first.metadata["cache_file"])
    cached = np.load(path)
    cached[0, 0, 0, 0] ^= 0xFF  # one pixel flipped, header and shape intact
    np.save(path, cached)
    again = _load(root, tmp_path, splits=("val",))["val"]
    assert not again.metadata["from_cache"] and len(decode_counter) == 2 * len(first)
    assert torch.equal(again.x, first.x)


def test_centre_crop_removes_the_top_and_bottom_bands(tmp_path):
    # 20 x 24 image: 2 red rows, 20 green rows, 2 blue rows; the 20 x 20 centre crop keeps only green.
    pixels = np.zeros((24, 20, 3), dtype=np.uint8)
    pixels[:2] = (255, 0, 0)
    pixels[2:22] = (0, 255, 0)
    pixels[22:] = (0, 0, 255)
    path = tmp_path / "bands.png"
    Image.fromarray(pixels).save(path)
    cropped = image_cache.preprocess_image(path, 10, crop=20)
    assert cropped.shape == (3, 10, 10) and cropped.dtype == np.uint8
    assert cropped[1].min() == 255 and cropped[0].max() == 0 and cropped[2].max() == 0
    whole = image_cache.preprocess_image(path, 10, crop=None)
    assert whole[0, 0].mean() > 50 and whole[2, -1].mean() > 50  # the bands survive without a crop
    with pytest.raises(image_cache.ImageDecodeError, match="larger than image"):
        image_cache.preprocess_image(path, 10, crop=21)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(image_cache.ImageDecodeError, match=r"broken.jpg"):
        image_cache.preprocess_image(tmp_path / "broken.jpg", 10, crop=None)
    with pytest.raises(image_cache.ImageFileMissingError, match=r"gone.jpg"):
        image_cache.preprocess_image(tmp_path / "gone.jpg", 10, crop=None)


def test_threaded_decoding_equals_serial_decoding_and_uint8_matches_float(tmp_path):
    root = make_official_root(tmp_path / "celeba")
    serial = _load(root, tmp_path / "serial")
    threaded = _load(root, tmp_path / "threaded", workers=2)
    raw = _load(root, tmp_path / "serial", dtype=torch.uint8)
    for split in serial:
        assert torch.equal(serial[split].x, threaded[split].x)
        assert raw[split].x.dtype == torch.uint8 and raw[split].metadata["from_cache"]
        assert torch.equal(to_unit_float(raw[split].x), serial[split].x)
    with pytest.raises(ValueError, match="dtype"):
        _load(root, tmp_path, dtype=torch.int32)


def test_empty_split_and_default_cache_dir(tmp_path, monkeypatch):
    root = make_official_root(tmp_path / "celeba")
    lines = (root / "list_eval_partition.txt").read_bytes().decode().replace(" 2 ", " 1 ")
    (root / "list_eval_partition.txt").write_bytes(lines.encode())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert image_cache.default_cache_dir() == tmp_path / "xdg" / "gradstarve" / "image-cache"
    data = load_celeba(root, resolution=8, crop=20, workers=0, progress=False)
    assert len(data["test"]) == 0 and data["test"].x.shape == (0, 3, 8, 8)
    assert Path(data["train"].metadata["cache_file"]).parent == tmp_path / "xdg" / "gradstarve" / "image-cache"


def test_a_data_root_holding_a_celeba_folder_works_too(tmp_path):
    make_official_root(tmp_path / "data" / "celeba")
    index = index_celeba(tmp_path / "data")
    assert index.root == (tmp_path / "data" / "celeba").resolve() and len(index.image_ids) == len(FAKE)


def test_augment_flips_and_crops_reproducibly():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    flipped = augment(x, torch.Generator().manual_seed(1), flip_probability=1.0)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(augment(x, torch.Generator().manual_seed(1), flip_probability=0.0), x)
    some = augment(x, torch.Generator().manual_seed(2))
    is_flipped = [torch.equal(some[i], x[i].flip(-1)) for i in range(16)]
    assert all(is_flipped[i] or torch.equal(some[i], x[i]) for i in range(16)) and 0 < sum(is_flipped) < 16
    # A full-size crop with aspect 1 is the identity (or the flip), up to float rounding of the sampling grid.
    full = augment(x, torch.Generator().manual_seed(3), flip_probability=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1, 1))
    assert torch.allclose(full, x.flip(-1), atol=1e-5)
    crops = [augment(x, torch.Generator().manual_seed(4), crop_scale=(0.3, 0.9)) for _ in range(2)]
    assert torch.equal(crops[0], crops[1]) and not torch.allclose(crops[0], x, atol=1e-2)
    constant = torch.full((4, 3, 8, 8), 0.25)
    assert torch.allclose(augment(constant, torch.Generator().manual_seed(5), crop_scale=(0.1, 0.5)), constant)
    with pytest.raises(ValueError, match="crop_scale"):
        augment(x, torch.Generator(), crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"floating \(n, C, H, W\)"):
        augment(x[0], torch.Generator())


def test_cli_prepare_builds_the_cache_and_prints_group_counts(tmp_path):
    from typer.testing import CliRunner

    from gradstarve.cli import app

    root = make_official_root(tmp_path / "data" / "celeba")
    command = ["data", "prepare", "celeba", "--data-root", str(root.parent), "--resolution", "8"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--workers", "0"]
    # crop 178 does not fit the 20 x 24 fake images: the error is reported, not a traceback.
    failed = CliRunner().invoke(app, command)
    assert failed.exit_code == 1 and "larger than image" in failed.output
    for i in range(len(FAKE)):  # images of the real size, so that the default 178 crop applies
        Image.new("RGB", (178, 218), _colour(i)).save(root / "img_align_celeba" / _image_id(i))
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    train_counts = np.bincount(_expected(0)[2], minlength=4)
    assert "blond, male" in first.output and "built" in first.output
    row = r"\s*\|\s*".join(["train", *map(str, train_counts), str(train_counts.sum())])
    assert re.search(row, first.output), first.output
    assert "1 of 12 listed images are not on disk" in first.output
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and "reused" in second.output and "built" not in second.output

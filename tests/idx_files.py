"""Test helpers: write small MNIST-format files (IDX, gzipped or raw, and .npz) without the library's reader."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian uint32 sizes, the bytes."""
    assert array.dtype == np.uint8
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_mnist(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 28 x 28 images and digits 0-9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_mnist(folder: Path, form: str = "gz", n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    """Write fake train and test splits into ``folder`` as ``form`` ("gz", "raw" or "npz"); return the arrays
    keyed like a Keras npz, plus ``md5`` of every file written (by file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = fake_mnist(n_train, 1)
    x_test, y_test = fake_mnist(n_test, 2)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if form == "npz":
        np.savez_compressed(folder / "mnist.npz", **arrays)
        return arrays
    for (split, kind), name in NAMES.items():
        array = arrays[f"{'x' if kind == 'images' else 'y'}_{split}"]
        data = idx_bytes(array)
        if form == "gz":
            data, name = gzip.compress(data), f"{name}.gz"
        (folder / name).write_bytes(data)
    return arrays


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()

"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx files, gzip).

Images come back as float tensors (n, 1, 28, 28) in [0, 1], labels as int64 (n,).
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from dimo_core.errors import ConfigError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ROOT_ENV = "DIMO_FASHION_MNIST"  # overrides DEFAULT_ROOT (a folder holding the four .gz files)
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_UBYTE = 0x08  # idx type code of unsigned bytes, the only one Fashion-MNIST uses


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, DEFAULT_ROOT))


def read_idx(path: Path) -> np.ndarray:
    """One idx file (magic: 0, 0, type, ndim; then ndim big-endian uint32 sizes; then the data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != IDX_UBYTE:
        raise ConfigError(f"{path} is not an idx file of unsigned bytes (header {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ConfigError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The inverse of ``read_idx`` (unsigned bytes, gzip): for test fixtures and custom data."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, IDX_UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write (n, 28, 28) uint8 images and (n,) labels under the package's file names."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / FILES[split][0], images)
    write_idx(folder / FILES[split][1], labels)


@functools.lru_cache(maxsize=4)
def load_split(split: str = "train", root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 1, 28, 28) float in [0, 1], labels (n,) int64) of the 'train' or 'test' split."""
    if split not in FILES:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    folder = Path(root) if root else default_root()
    paths = [folder / name for name in FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"Fashion-MNIST files are missing ({', '.join(missing)}); install them with "
                          f"`sudo apt-get install dataset-fashion-mnist`, or set {ROOT_ENV} to a folder "
                          f"holding the four idx .gz files")
    images, labels = (read_idx(p) for p in paths)
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    images = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return images, torch.from_numpy(labels.astype(np.int64))

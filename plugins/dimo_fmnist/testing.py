"""Fixtures for tests of the bench and of the plug-ins that use it."""
from __future__ import annotations

from pathlib import Path

import torch

from .fashion_mnist import write_split


def random_fashion_mnist(root: str | Path, train: int = 64, test: int = 32, seed: int = 0) -> Path:
    """A folder in the Debian package's layout holding random pictures, labels cycling 0..9."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", train), ("test", test)):
        write_split(root, split, torch.randint(0, 256, (n, 28, 28), generator=g).numpy(), (torch.arange(n) % 10).numpy())
    return Path(root)

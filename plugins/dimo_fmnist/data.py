"""Fashion-MNIST as tokens of a configured tokenizer, for ``dimo train-teacher``."""
from __future__ import annotations

import torch
from torch import Tensor

from .fashion_mnist import load_split


class FashionMNISTTokens:
    """Dataset protocol: random (codes (n, L), labels (n,)) pairs of a split.

    Each split is encoded with the tokenizer once, on first use, and kept in memory
    (60,000 x 49 codes are about 24 MB as int64)."""

    SPLITS = {"train": "train", "test": "test", "eval": "test"}

    def __init__(self, tokenizer, root: str | None = None):
        self.tokenizer, self.root = tokenizer, root
        self._encoded: dict[str, tuple[Tensor, Tensor]] = {}

    def encoded(self, split: str = "train") -> tuple[Tensor, Tensor]:
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(self.SPLITS)}")
        name = self.SPLITS[split]
        if name not in self._encoded:
            images, labels = load_split(name, self.root)
            codes = torch.cat([self.tokenizer.encode(images[i:i + 10_000]) for i in range(0, len(images), 10_000)])
            self._encoded[name] = (codes.cpu(), labels)
        return self._encoded[name]

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> tuple[Tensor, Tensor]:
        codes, labels = self.encoded(split)
        idx = torch.randint(0, len(codes), (n,), generator=generator, device=generator.device).cpu()
        return codes[idx].to(generator.device), labels[idx].to(generator.device)

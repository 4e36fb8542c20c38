"""Class-label conditions, and Fashion-MNIST as tokens for ``dimo train-teacher``."""
from __future__ import annotations

import torch
from torch import Tensor

from dimo_core.errors import ConfigError

from .fashion_mnist import load_split

EVAL_SPLITS = ("eval", "test")


class ClassLabels:
    """Conditions protocol for class-conditional MaskGit: labels (B,) int64 in [0, num_classes);
    the null class (classifier-free guidance, condition dropout) is the label ``num_classes``.

    Training draws labels uniformly; evaluation ("eval"/"test" split) cycles 0, 1, ..., so every
    class is equally represented and the first ``num_classes`` samples show each class once."""

    def __init__(self, num_classes: int, class_names: tuple[str, ...] | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.class_names = num_classes, class_names

    def from_text(self, texts: list[str]) -> Tensor:
        """Labels from ``dimo sample prompt=...``: a class index ("7") or a class name ("sneaker")."""
        names = [n.lower() for n in self.class_names or ()]
        labels = []
        for text in texts:
            key = text.strip().lower()
            if key.isdigit() and int(key) < self.num_classes:
                labels.append(int(key))
            elif key in names:
                labels.append(names.index(key))
            else:
                raise ConfigError(f"prompt {text!r} names no class; give an index 0..{self.num_classes - 1}"
                                  + (f" or one of: {', '.join(names)}" if names else ""))
        return torch.tensor(labels, dtype=torch.long)

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Tensor:
        if split in EVAL_SPLITS:
            return torch.arange(n, device=generator.device) % self.num_classes
        return torch.randint(0, self.num_classes, (n,), generator=generator, device=generator.device)

    def null(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, self.num_classes)


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

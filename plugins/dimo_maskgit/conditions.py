"""Class-label conditions: labels (B,), the null class for guidance, class names for prompts."""
from __future__ import annotations

import torch
from torch import Tensor

from dimo_core.errors import ConfigError

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

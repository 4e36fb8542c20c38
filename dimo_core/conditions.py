"""Row-wise operations on opaque condition batches (None, a tensor, or a dict of them), and
``ClassLabels``, the conditions of class-conditional teachers."""
from __future__ import annotations

import torch
from torch import Tensor

from .errors import ConfigError
from .protocols import Cond


def cat_conditions(a: Cond, b: Cond) -> Cond:
    if a is None:
        return None
    if isinstance(a, dict):
        return {k: cat_conditions(a[k], b[k]) for k in a}
    return torch.cat([a, b], dim=0)


def index_conditions(cond: Cond, index) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: index_conditions(v, index) for k, v in cond.items()}
    return cond[index]


def where_conditions(keep: Tensor, cond: Cond, other: Cond) -> Cond:
    """Row i from ``cond`` where keep[i] else from ``other`` (condition dropout for guidance)."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: where_conditions(keep, cond[k], other[k]) for k in cond}
    shape = (-1,) + (1,) * (cond.dim() - 1)
    return torch.where(keep.view(shape).to(cond.device), cond, other)


def conditions_to(cond: Cond, device) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: conditions_to(v, device) for k, v in cond.items()}
    return cond.to(device)


def conditions_len(cond: Cond) -> int | None:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return conditions_len(next(iter(cond.values())))
    return cond.shape[0]


EVAL_SPLITS = ("eval", "test")


class ClassLabels:
    """Conditions protocol for class-conditional teachers: labels (B,) int64 in [0, num_classes);
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

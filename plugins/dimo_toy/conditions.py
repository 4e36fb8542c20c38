"""The toy's conditions: a class label per sequence, the null class for guidance."""
from __future__ import annotations

import torch


class ClassConditions:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def sample(self, n, generator, split="train"):
        return torch.randint(0, self.num_classes, (n,), generator=generator, device=generator.device)

    def null(self, cond):
        return torch.full_like(cond, self.num_classes)

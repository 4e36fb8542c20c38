"""Captioned Fashion-MNIST for ``dimo train-teacher``: image codes with a caption of their class."""
from __future__ import annotations

import torch
from torch import Tensor


class CaptionedFashionMNIST:
    """Dataset protocol: random (codes (n, L), caption condition dict) pairs; each image's caption
    names its class with a template drawn from the training templates."""

    def __init__(self, tokenizer, conditions, root: str | None = None):
        from dimo_fmnist.data import FashionMNISTTokens
        self.images, self.conditions = FashionMNISTTokens(tokenizer, root), conditions

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> tuple[Tensor, dict[str, Tensor]]:
        codes, labels = self.images.sample(n, generator, split)
        return codes, self.conditions.for_labels(labels, generator, split)

"""The toy's dataset: (sequence, class) pairs drawn from the Markov source."""
from __future__ import annotations

import torch

from .source import MarkovSource


class MarkovData:
    def __init__(self, src: MarkovSource):
        self.src = src

    def sample(self, n, generator, split="train"):
        labels = torch.randint(0, self.src.num_classes, (n,), generator=generator, device=generator.device).cpu()
        return self.src.sample(labels, _cpu(generator)), labels


def _cpu(generator: torch.Generator) -> torch.Generator:
    if generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))

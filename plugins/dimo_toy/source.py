"""Class-conditional sparse Markov chains: every sequence's probability is computable.

Each class c has an initial distribution over V symbols and a transition matrix in which every
symbol has only ``successors`` allowed next symbols. A sampler that treats positions independently
(a one-step MDM teacher) almost never produces a sequence of non-zero probability.
"""
from __future__ import annotations

import torch
from torch import Tensor


class MarkovSource:
    def __init__(self, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3,
                 seed: int = 0):
        self.vocab_size, self.seq_len, self.num_classes = vocab_size, seq_len, num_classes
        g = torch.Generator().manual_seed(seed)
        self.initial = _dirichlet(g, (num_classes, vocab_size), 0.5)
        transition = torch.zeros(num_classes, vocab_size, vocab_size, dtype=torch.float64)
        for c in range(num_classes):
            for s in range(vocab_size):
                nxt = torch.randperm(vocab_size, generator=g)[:successors]
                transition[c, s, nxt] = _dirichlet(g, (successors,), 1.0)
        self.transition = transition

    def sample(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        n = labels.shape[0]
        x = torch.empty(n, self.seq_len, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.initial[labels], 1, generator=generator)[:, 0]
        for i in range(1, self.seq_len):
            x[:, i] = torch.multinomial(self.transition[labels, x[:, i - 1]], 1, generator=generator)[:, 0]
        return x

    def log_prob(self, x: Tensor, labels: Tensor) -> Tensor:
        """Exact log p(x | c) (-inf for impossible sequences), float64."""
        x, labels = x.cpu(), labels.cpu()
        logp = self.initial[labels, x[:, 0]].log()
        for i in range(1, x.shape[1]):
            logp = logp + self.transition[labels, x[:, i - 1], x[:, i]].log()
        return logp

    def entropy_per_token(self, label: int) -> float:
        """H(X_1..X_L | c) / L, exactly, by propagating the marginals."""
        def h(p):
            p = p[p > 0]
            return float(-(p * p.log()).sum())
        marginal = self.initial[label]
        total = h(marginal)
        row_entropy = torch.tensor([h(self.transition[label, s]) for s in range(self.vocab_size)], dtype=torch.float64)
        for _ in range(1, self.seq_len):
            total += float((marginal * row_entropy).sum())
            marginal = marginal @ self.transition[label]
        return total / self.seq_len

    def pair_frequencies(self, label: int) -> Tensor:
        """Expected frequencies of adjacent pairs (a, b) under class ``label``, (V, V), summing to 1."""
        marginal, pairs = self.initial[label], torch.zeros(self.vocab_size, self.vocab_size, dtype=torch.float64)
        for _ in range(1, self.seq_len):
            pairs += marginal[:, None] * self.transition[label]
            marginal = marginal @ self.transition[label]
        return pairs / (self.seq_len - 1)


def _dirichlet(g: torch.Generator, shape, alpha: float) -> Tensor:
    # torch's Gamma sampler takes no generator: seed it from ours, without touching the global stream
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gamma = torch._standard_gamma(torch.full(shape, alpha, dtype=torch.float64))
    return gamma / gamma.sum(-1, keepdim=True)


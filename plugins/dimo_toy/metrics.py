"""The toy's metrics: exact scores against the source."""
from __future__ import annotations

import torch

from .source import MarkovSource


class ExactMetrics:
    """Exact scores against the source: no network in between."""

    def __init__(self, src: MarkovSource):
        self.src = src
        self.entropy = torch.tensor([src.entropy_per_token(c) for c in range(src.num_classes)])

    def __call__(self, tokens, cond):
        labels = cond.cpu()
        logp = self.src.log_prob(tokens.cpu(), labels)
        valid = torch.isfinite(logp)
        x = tokens.cpu()
        transitions = self.src.transition[labels[:, None], x[:, :-1], x[:, 1:]] > 0
        nll = -(logp[valid].sum() / (valid.sum() * self.src.seq_len)) if valid.any() else torch.tensor(float("nan"))
        pair_tv = []
        for c in range(self.src.num_classes):
            x = tokens[labels == c].cpu()
            if len(x) == 0:
                continue
            counts = torch.zeros(self.src.vocab_size, self.src.vocab_size, dtype=torch.float64)
            counts.index_put_((x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)), torch.ones(x[:, 1:].numel(),
                              dtype=torch.float64), accumulate=True)
            pair_tv.append(0.5 * float((counts / counts.sum() - self.src.pair_frequencies(c)).abs().sum()))
        return {"valid_fraction": float(valid.double().mean()),
                "valid_transitions": float(transitions.double().mean()),  # graded: share of allowed pairs
                "nll_per_token": float(nll),          # exact NLL of the valid samples, nats per token
                "source_entropy_per_token": float(self.entropy[labels].mean()),
                "pair_tv": sum(pair_tv) / len(pair_tv)}  # TV between sample and source pair frequencies

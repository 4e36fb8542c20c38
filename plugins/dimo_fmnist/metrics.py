"""Image quality of generated tokens: decode with the tokenizer, then score in a network's features.

Default network: the committed Fashion-MNIST CNN (``classifier.py``). Reported as
- ``fd_fmnist_cnn``: Frechet distance to the committed test-split statistics (FID's formula in
  this CNN's 128-d feature space; it is not FID and is never called so);
- ``is_fmnist_cnn``: exp E_x KL(p(y|x) || p(y)) from the CNN's class probabilities (one split;
  at most 10, the number of classes);
- ``precision``, ``recall``, ``density``, ``coverage``: Naeem et al. 2020 with k nearest neighbours
  (k = 5) against real test-split features: a fixed random subset of the test split, as many reals
  as samples (``real_samples`` to choose; at most 10,000);
- ``class_accuracy``: how often the CNN recognises the requested class (conditional samples).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


from .classifier import FEATURE_NAME, features_and_probs, load_classifier, mean_and_cov
from .fashion_mnist import load_split

MAX_REALS = 10_000


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """|m1 - m2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)); the trace of the root via the symmetric form
    C1^(1/2) C2 C1^(1/2), whose eigenvalues equal those of C1 C2 (stable, no complex sqrtm)."""
    mean1, cov1, mean2, cov2 = (t.double() for t in (mean1, cov1, mean2, cov2))
    vals, vecs = torch.linalg.eigh(cov1)
    root1 = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return float(((mean1 - mean2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


def inception_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean over the samples."""
    probs = probs.double().clamp_min(1e-12)
    marginal = probs.mean(0, keepdim=True)
    return float(torch.exp((probs * (probs.log() - marginal.log())).sum(1).mean()))


def kth_neighbour_distance(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.topk(k + 1, dim=1, largest=False).values[:, -1]  # column 0 is the row itself


def prdc(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN balls."""
    real_radius = kth_neighbour_distance(real, k)
    fake_radius = kth_neighbour_distance(fake, k)
    d = torch.cdist(real, fake)                         # (N real, M fake)
    inside_real_balls = d <= real_radius[:, None]       # fake j inside the ball of real i
    return {
        "precision": float(inside_real_balls.any(0).double().mean()),
        "recall": float((d <= fake_radius[None, :]).any(1).double().mean()),
        "density": float(inside_real_balls.double().sum(0).mean() / k),
        "coverage": float((d.min(1).values <= real_radius).double().mean()),
    }


def decode_batches(tokenizer, tokens: Tensor, batch_size: int) -> Tensor:
    return torch.cat([tokenizer.decode(tokens[i:i + batch_size]).float().cpu()
                      for i in range(0, len(tokens), batch_size)])


class ImageQuality:
    """Metric protocol over the Fashion-MNIST CNN (see the module docstring)."""

    def __init__(self, tokenizer, classifier: str | Path | None = None, k: int = 5,
                 real_samples: int | None = None, root: str | None = None, batch_size: int = 500):
        self.tokenizer, self.k, self.real_samples, self.root = tokenizer, k, real_samples, root
        self.batch_size = batch_size
        self.net, self.ref_mean, self.ref_cov, self.meta = load_classifier(*([classifier] if classifier else []))
        self._real_features: dict[int, Tensor] = {}

    def real_features(self, n: int) -> Tensor:
        """Features of n real test images, a fixed random subset (computed once per n)."""
        if n not in self._real_features:
            images, _ = load_split("test", self.root)
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
            self._real_features[n] = features_and_probs(self.net, images[pick], self.batch_size)[0]
        return self._real_features[n]

    def __call__(self, tokens: Tensor, cond: Tensor | None) -> dict[str, float]:
        images = decode_batches(self.tokenizer, tokens, self.batch_size)
        feats, probs = features_and_probs(self.net, images, self.batch_size)
        mean, cov = mean_and_cov(feats)
        out = {f"fd_{FEATURE_NAME}": frechet_distance(mean, cov, self.ref_mean, self.ref_cov),
               f"is_{FEATURE_NAME}": inception_score(probs)}
        reals = self.real_features(min(self.real_samples or len(feats), MAX_REALS))
        if min(len(feats), len(reals)) > self.k:  # k-NN balls need more than k points
            out.update(prdc(reals, feats, self.k))
        if cond is not None:
            out["class_accuracy"] = float((probs.argmax(1) == cond.cpu()).double().mean())
        return out

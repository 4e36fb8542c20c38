"""A CPU-sized image tokenizer: vector quantisation of non-overlapping p x p patches.

Each patch of a (C, H, W) image is replaced by the nearest of K codebook patches, so a 28 x 28
Fashion-MNIST image with p = 4 becomes 7 x 7 = 49 codes in [0, K). The codebook is fitted by
k-means on real training patches (``fit_codebook``); no network, so encoding is exact nearest
neighbour search and decoding a lookup. It stands in for MaskGit's VQGAN at Fashion-MNIST scale.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.checkpoint import load_tensors, save_tensors
from dimo_core.errors import CheckpointError

BUNDLED = Path(__file__).parent / "assets" / "fmnist_patch_vq.safetensors"


def to_patches(images: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p), patches in row-major order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def from_patches(patches: Tensor, p: int, channels: int, height: int, width: int) -> Tensor:
    b = patches.shape[0]
    x = patches.reshape(b, height // p, width // p, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


def nearest(points: Tensor, centroids: Tensor, chunk: int = 65536) -> Tensor:
    """Index of the nearest centroid (squared Euclidean) for each row of ``points``."""
    c_sq = (centroids ** 2).sum(1)
    out = []
    for start in range(0, points.shape[0], chunk):
        x = points[start:start + chunk]
        out.append((c_sq - 2 * x @ centroids.T).argmin(1))  # |x|^2 is the same for every centroid
    return torch.cat(out)


def fit_codebook(points: Tensor, k: int, iters: int, generator: torch.Generator) -> Tensor:
    """k-means (k-means++ seeding on a subsample, then Lloyd iterations) on rows of ``points``."""
    seed_pool = points[torch.randperm(points.shape[0], generator=generator)[:min(len(points), 20 * k)]]
    centroids = seed_pool[torch.randint(len(seed_pool), (1,), generator=generator)]
    dist = ((seed_pool - centroids[0]) ** 2).sum(1)
    for _ in range(k - 1):  # k-means++: next seed drawn with probability proportional to distance^2
        pick = torch.multinomial(dist / dist.sum(), 1, generator=generator) if dist.sum() > 0 else \
            torch.randint(len(seed_pool), (1,), generator=generator)
        centroids = torch.cat([centroids, seed_pool[pick]])
        dist = torch.minimum(dist, ((seed_pool - seed_pool[pick]) ** 2).sum(1))
    for _ in range(iters):
        assign = nearest(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed dead codes on random points so that every code is used
            centroids[empty] = points[torch.randint(len(points), (int(empty.sum()),), generator=generator)]
    return centroids


class PatchVQTokenizer:
    """Tokenizer protocol: ``encode`` images (B, C, H, W) in [0, 1] -> codes (B, H/p * W/p);
    ``decode`` codes -> images in [0, 1]. ``mask_id`` is None: the codebook has no mask code."""

    mask_id = None

    def __init__(self, codebook: Tensor, patch_size: int = 4, image_size: int = 28, channels: int = 1):
        if codebook.shape[1] != channels * patch_size ** 2:
            raise CheckpointError(f"codebook rows have {codebook.shape[1]} values, expected "
                                  f"{channels} x {patch_size} x {patch_size}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.codebook = codebook.float()
        self.patch_size, self.image_size, self.channels = patch_size, image_size, channels
        self.vocab_size = codebook.shape[0]
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.seq_len = self.grid[0] * self.grid[1]

    def encode(self, images: Tensor) -> Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        patches = to_patches(images.float().cpu(), self.patch_size)
        codes = nearest(patches.reshape(-1, patches.shape[-1]), self.codebook)
        return codes.reshape(images.shape[0], self.seq_len).to(images.device)

    def decode(self, tokens: Tensor) -> Tensor:
        tokens = tokens.long()
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"codes must lie in [0, {self.vocab_size}); got [{int(tokens.min())}, "
                             f"{int(tokens.max())}] (a mask id left in the sample?)")
        patches = self.codebook.to(tokens.device)[tokens]
        return from_patches(patches, self.patch_size, self.channels, self.image_size, self.image_size)

    def save(self, path: str | Path, **metadata) -> None:
        meta = {"patch_size": self.patch_size, "image_size": self.image_size, "channels": self.channels}
        save_tensors(path, {"codebook": self.codebook}, {**meta, **metadata})

    @classmethod
    def load(cls, path: str | Path = BUNDLED) -> "PatchVQTokenizer":
        tensors, meta = load_tensors(path)
        if "codebook" not in tensors:
            raise CheckpointError(f"{path} holds no 'codebook' tensor; it is not a patch VQ tokenizer")
        return cls(tensors["codebook"], int(meta.get("patch_size", 4)), int(meta.get("image_size", 28)),
                   int(meta.get("channels", 1)))


def train_patch_vq(images: Tensor, codebook_size: int, patch_size: int = 4, iters: int = 25,
                   fit_patches: int = 400_000, seed: int = 0) -> PatchVQTokenizer:
    """Fit the codebook by k-means on ``fit_patches`` random training patches."""
    g = torch.Generator().manual_seed(seed)
    patches = to_patches(images.float(), patch_size).reshape(-1, images.shape[1] * patch_size ** 2)
    subset = patches[torch.randperm(len(patches), generator=g)[:fit_patches]]
    codebook = fit_codebook(subset, codebook_size, iters, g)
    return PatchVQTokenizer(codebook, patch_size, images.shape[-1], images.shape[1])

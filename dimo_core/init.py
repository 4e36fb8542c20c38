"""Initial distributions for the generator's input x_init (section 4.3 of the paper)."""
from __future__ import annotations

import torch
from torch import Tensor

from .masking import random_positions


def random_init(batch_size: int, seq_len: int, vocab_size: int, mask_id: int, r_init: float | tuple[float, float],
                generator: torch.Generator, device=None, codes: int | None = None) -> Tensor:
    """Uniformly random codes, then exactly round(L * r_init) positions set to the mask id.

    ``r_init`` is fixed, or a range (a, b) from which one ratio is drawn per batch. ``codes`` limits the
    random codes to [0, codes) (default: all of [0, vocab_size) except the mask id)."""
    codes = codes or vocab_size
    if isinstance(r_init, (tuple, list)):  # a tensor on the generator's device: no read back to the host
        a, b = r_init
        r_init = a + (b - a) * torch.rand((), generator=generator, device=generator.device, dtype=torch.float64)
    mask_in_range = mask_id < codes  # the mask id is a logit column (text vocabularies): skip it
    x = torch.randint(0, codes - mask_in_range, (batch_size, seq_len), generator=generator,
                      device=generator.device)
    if mask_in_range:
        x = x + (x >= mask_id).long()
    if isinstance(r_init, Tensor):
        n_masked = torch.round(seq_len * r_init).long().to(x.device).expand(batch_size)
    else:
        n_masked = torch.full((batch_size,), round(seq_len * r_init), device=x.device)
    masked = random_positions(batch_size, seq_len, n_masked, generator, x.device)
    return x.masked_fill(masked, mask_id).to(device)


def perturb_embeddings(e: Tensor, sigma: float, generator: torch.Generator | None) -> Tensor:
    """sigma * eps + sqrt(1 - sigma^2) * e, eps ~ N(0, I) from ``generator``: the generator's
    embedding perturbation. The caller owns the stream (the engine, a sampler's generator), so a
    draw never depends on torch's global RNG or on what ran before it."""
    if sigma == 0:
        return e
    if generator is None:
        raise ValueError("embedding_noise > 0 needs a torch.Generator to draw the noise from (generator=...)")
    eps = torch.randn(e.shape, generator=generator, device=generator.device, dtype=e.dtype)
    return sigma * eps.to(e.device) + (1 - sigma ** 2) ** 0.5 * e


class RandomMaskInit:
    """``random_mask`` init strategy: random codes, round(L * r_init) of them masked."""

    def __init__(self, r_init: float | tuple[float, float] = 0.6):
        self.r_init = r_init

    def __call__(self, batch_size, seq_len, vocab_size, mask_id, generator, device="cpu") -> Tensor:
        return random_init(batch_size, seq_len, vocab_size, mask_id, self.r_init, generator, device)

"""LLaDA's sampler: semi-autoregressive blocks, a fixed number of tokens committed per step.

The response is cut into blocks of ``block_length``; the steps are shared evenly among the blocks,
and the masked tokens of a block evenly among its steps (the linear schedule LLaDA trains with).
At each step every masked position gets a candidate, argmax(logits + T * Gumbel) in float64
(T = 0: greedy), and the candidates with the highest confidence inside the current block are
committed: confidence is the model's probability of the candidate ("low_confidence" remasking:
the rest is remasked) or uniform noise ("random"). Committed tokens, and positions of ``x`` that
were not masked to begin with, never change; the prompt lives in ``cond`` and is never touched.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from dimo_core.errors import ConfigError
from dimo_core.sampling import guided_logits, suppress_mask_column

Remasking = Literal["low_confidence", "random"]


def split_evenly(total: Tensor | int, parts: int) -> Tensor:
    """Counts (..., parts) summing to ``total``, the remainder going to the first parts."""
    total = torch.as_tensor(total)
    base, extra = total // parts, total % parts
    return base[..., None] + (torch.arange(parts, device=total.device) < extra[..., None]).long()


def gumbel_candidates(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """argmax(logits + T * Gumbel): a draw from softmax(logits / T), in float64 (LLaDA: low precision
    Gumbel-max lowers generation quality); T = 0 is the plain argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=generator, device=generator.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300))).to(logits.device)
    return (logits.double() + temperature * gumbel).argmax(-1)


def top_k_mask(scores: Tensor, k: Tensor) -> Tensor:
    """Boolean mask of the k[b] highest scores of each row b."""
    ranks = scores.argsort(dim=-1, descending=True).argsort(dim=-1)
    return ranks < k[:, None]


class LLaDASampler:
    def __init__(self, block_length: int | None = None, temperature: float = 1.0,
                 remasking: Remasking = "low_confidence"):
        if block_length is not None and block_length < 1:
            raise ConfigError("sampler.block_length must be >= 1 (or null: one block)")
        if remasking not in ("low_confidence", "random"):
            raise ConfigError(f"sampler.remasking must be low_confidence or random, got {remasking!r}")
        self.block_length, self.temperature, self.remasking = block_length, temperature, remasking

    def blocks(self, length: int) -> list[tuple[int, int]]:
        size = self.block_length or length
        return [(lo, min(length, lo + size)) for lo in range(0, length, size)]

    @torch.no_grad()
    def __call__(self, model, x: Tensor, cond, null_cond, *, steps: int, guidance: float, mask_id: int,
                 generator: torch.Generator) -> Tensor:
        x = x.clone()
        blocks = self.blocks(x.shape[1])
        if steps < len(blocks):
            raise ConfigError(f"{steps} steps cannot fill {len(blocks)} blocks of {self.block_length} tokens; "
                              f"use steps >= {len(blocks)} or a block_length >= {math.ceil(x.shape[1] / steps)}")
        for (lo, hi), block_steps in zip(blocks, split_evenly(steps, len(blocks)).tolist()):
            in_block = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
            in_block[lo:hi] = True
            per_step = split_evenly((x[:, lo:hi] == mask_id).sum(1), block_steps)   # (B, block_steps)
            for s in range(block_steps):
                if not bool(per_step[:, s].any()):
                    continue   # nothing to commit: no forward pass spent
                masked = x == mask_id
                logits = suppress_mask_column(guided_logits(model, x, cond, null_cond, guidance).float(), mask_id)
                candidates = gumbel_candidates(logits, self.temperature, generator)
                if self.remasking == "low_confidence":
                    confidence = logits.double().softmax(-1).gather(-1, candidates[..., None])[..., 0]
                else:
                    confidence = torch.rand(x.shape, generator=generator, device=generator.device,
                                            dtype=torch.float64).to(x.device)
                confidence = confidence.masked_fill(~(masked & in_block), -math.inf)
                commit = top_k_mask(confidence, per_step[:, s])
                x = torch.where(commit, candidates, x)
        return x

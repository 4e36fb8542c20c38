"""Masking schedules r(t) and the forward (masking) process of an MDM."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def arccos_schedule(t: Tensor) -> Tensor:
    return torch.arccos(t.clamp(0, 1)) / (math.pi / 2)   # MaskGit


def cosine_schedule(t: Tensor) -> Tensor:
    return torch.cos(math.pi * t / 2)                     # Meissonic


def linear_schedule(t: Tensor) -> Tensor:
    return 1 - t


def square_schedule(t: Tensor) -> Tensor:
    return 1 - t ** 2


SCHEDULES = {"arccos": arccos_schedule, "cosine": cosine_schedule,
             "linear": linear_schedule, "square": square_schedule}


# t(r): the inverse of each schedule, the sampling progress at which a sampler sees mask ratio r
SCHEDULE_INVERSES = {"arccos": lambda r: torch.cos(math.pi * r / 2),
                     "cosine": lambda r: torch.arccos(r) / (math.pi / 2),
                     "linear": lambda r: 1 - r,
                     "square": lambda r: torch.sqrt(1 - r)}


def schedule_progress(schedule: str, r: Tensor) -> Tensor:
    """The time t in [0, 1] at which ``schedule`` leaves mask ratio r (0 = all masked, 1 = none)."""
    return SCHEDULE_INVERSES[schedule](r.clamp(0, 1))


def mask_ratio(schedule: str, t: Tensor, clamp: tuple[float, float] | None = None) -> Tensor:
    """Ratio of masked tokens at time t ~ U(0, 1) (t = 0: all masked, t = 1: none)."""
    try:
        r = SCHEDULES[schedule](t)
    except KeyError:
        raise ValueError(f"unknown masking schedule {schedule!r}; choose one of {sorted(SCHEDULES)}") from None
    return r.clamp(*clamp) if clamp else r


def random_positions(batch: int, length: int, counts: Tensor, generator: torch.Generator,
                     device=None) -> Tensor:
    """Boolean (batch, length): exactly counts[b] positions of row b, chosen uniformly."""
    scores = torch.rand(batch, length, generator=generator, device=generator.device).to(device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts.to(ranks.device).view(-1, 1)


def mask_tokens(x: Tensor, ratio: Tensor, mask_id: int, generator: torch.Generator,
                min_masked: int = 1) -> tuple[Tensor, Tensor]:
    """Mask exactly round(ratio * L) positions per row (at least ``min_masked``).

    Returns (masked tokens, boolean mask of the masked positions)."""
    b, length = x.shape
    counts = torch.round(ratio.to(torch.float64) * length).long().clamp(min_masked, length)
    masked = random_positions(b, length, counts, generator, x.device)
    return x.masked_fill(masked, mask_id), masked


def sample_masked(x: Tensor, schedule: str, mask_id: int, generator: torch.Generator,
                  clamp: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
    """Draw t ~ U(0, 1) per row, map it through the schedule and mask (step 3 of Algorithm 1)."""
    t = torch.rand(x.shape[0], generator=generator, device=generator.device)
    return mask_tokens(x, mask_ratio(schedule, t, clamp), mask_id, generator)

"""Counter-based uniforms: u = hash(key, counter), computed with integer tensor ops on any device.

A value depends only on its key (from the seed, the step and which draw of the step) and its
counter (global row x length + position), never on how many values were drawn before it or on
which process draws it: N processes that each hash their own rows get exactly the values one
process gets for the whole batch, with no per-row generator and no state to save beyond the step.

Integer arithmetic is kept well defined in int64: every intermediate value is in [0, 2^32), a
32-bit product is formed with a multiplier below 2^31 in absolute value (so |product| < 2^63) and
reduced modulo 2^32 with a mask, and right shifts only see non-negative values.
"""
from __future__ import annotations

import torch
from torch import Tensor

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def splitmix64(x: int) -> int:
    """One step of SplitMix64 (Steele et al. 2014) on Python ints: seeds and keys, host side."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stream_key(*fields: int) -> int:
    """A 64-bit key for one draw, e.g. stream_key(seed, step, draw_index)."""
    key = 0
    for f in fields:
        key = splitmix64(key ^ (f & M64))
    return key


def _mul32(x: Tensor, c: int) -> Tensor:
    """x * c mod 2^32 for x in [0, 2^32): c taken as its signed 32-bit twin, |x * c| < 2^63."""
    return (x * (c - (1 << 32) if c >= 1 << 31 else c)) & M32


def _lowbias32(x: Tensor) -> Tensor:
    """A bijection of [0, 2^32) with low bias (C. Wellons' hash-prospector "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _lane(counter: Tensor, k0: int, k1: int) -> Tensor:
    """32 hashed bits per counter; for a fixed key a bijection, so no two counters collide."""
    return _lowbias32(_lowbias32(counter ^ k0) ^ k1)


def key_lanes(key: int) -> list[int]:
    """The four 32-bit lane keys the hash uses for ``key``: computed on the host, so a device
    buffer of them can be refilled before each step (a captured CUDA graph reads them from there)."""
    k = splitmix64(key)
    k2 = splitmix64(k)
    return [k & M32, k >> 32, k2 & M32, k2 >> 32]


def counter_uniforms(key: int | Tensor, counter: Tensor) -> Tensor:
    """float64 uniforms in [0, 1) with 53 random bits, one per entry of ``counter`` (int64 in [0, 2^32)).
    ``key``: a 64-bit key, or its ``key_lanes`` as an int64 tensor of 4 (the same values)."""
    k0, k1, k2, k3 = key_lanes(key) if isinstance(key, int) else key
    high = _lane(counter, k0, k1) >> 6        # 26 bits
    low = _lane(counter, k2, k3) >> 5         # 27 bits
    return (high * (1 << 27) + low).double() * 2.0 ** -53


def row_uniforms(key: int | Tensor, first_row: int, rows: int, length: int, total_rows: int, device) -> Tensor:
    """(rows, length) uniforms for rows [first_row, first_row + rows) of a batch of ``total_rows``:
    counter = global row * length + position."""
    if total_rows * length >= 1 << 32:
        raise ValueError(f"a draw of {total_rows} x {length} values exceeds the 2^32 counters of one key")
    row = torch.arange(first_row, first_row + rows, device=device)
    return counter_uniforms(key, row[:, None] * length + torch.arange(length, device=device))

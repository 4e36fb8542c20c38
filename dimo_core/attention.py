"""One attention call for plugin models: torch SDPA, or xformers' memory-efficient kernel on CUDA
when ``performance.attention=xformers`` and xformers is installed (``pip install 'dimo[xformers]'``).

Tensors use SDPA's layout, (batch, heads, length, head_dim), whichever backend runs.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

_backend = "sdpa"


def set_attention_backend(name: str) -> None:
    """``sdpa`` or ``xformers`` (a run sets it from performance.attention)."""
    global _backend
    if name not in ("sdpa", "xformers"):
        raise ValueError(f"unknown attention backend {name!r}; choose sdpa or xformers")
    _backend = name


def attention_backend() -> str:
    return _backend


@functools.cache
def _xformers_ops():
    try:
        import xformers.ops
        return xformers.ops
    except ImportError:
        return None


def xformers_available() -> bool:
    return _xformers_ops() is not None


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, bidirectional; ``mask`` is additive or boolean (True = attend)."""
    ops = _xformers_ops() if _backend == "xformers" and q.is_cuda else None
    if ops is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    if mask is not None:  # xformers wants a bias of the full (B, H, Lq, Lk) shape
        mask = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = ops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_bias=mask, p=dropout_p)
    return out.transpose(1, 2)


"""A small bidirectional transformer MDM, public for plug-in authors and tests.

``SmallMDM`` follows the Teacher protocol (``vocab_size``, ``mask_id = vocab_size``, ``seq_len``,
``forward(tokens, cond, embedding_noise, generator)``) with class labels as conditions (label ``num_classes`` is
the null class; ``cond=None`` means it), or none at all with ``num_classes=0``. The class is one more
token appended to the sequence, as MaskGit does. Train it with ``dimo train-teacher``; the toy
plug-in's teacher is this model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import perturb_embeddings


class Block(nn.Module):
    """Pre-norm self-attention (no causal mask) and MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.heads = heads

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class SmallMDM(nn.Module):
    """tokens (B, L) in [0, V) or the mask id V; cond: class labels (B,) in [0, C], C = null, or None.
    Returns logits (B, L, V) over the V real tokens (never the mask)."""

    def __init__(self, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, dim: int = 96,
                 depth: int = 3, heads: int = 4):
        super().__init__()
        self.vocab_size, self.mask_id, self.seq_len, self.num_classes = vocab_size, vocab_size, seq_len, num_classes
        self.token_embedding = nn.Embedding(vocab_size + 1, dim)
        self.class_embedding = nn.Embedding(num_classes + 1, dim)
        self.position_embedding = nn.Parameter(torch.randn(seq_len + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor, cond: Tensor | None, embedding_noise: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
        if cond is None:
            cond = torch.full(tokens.shape[:1], self.num_classes, device=tokens.device)
        e = perturb_embeddings(self.token_embedding(tokens), embedding_noise, generator)  # generated tokens only
        h = torch.cat([e, self.class_embedding(cond)[:, None]], 1) + self.position_embedding
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, :-1]))

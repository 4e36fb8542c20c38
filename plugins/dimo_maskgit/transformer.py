"""The MaskGit bidirectional transformer of valeoai/Maskgit-pytorch, branch v1.0.

Written from the facts of that release so that its checkpoint loads key for key:
``tok_emb`` (codebook + mask + classes + null rows), ``pos_emb`` (1, tokens + 1, hidden),
``first_layer`` / ``last_layer`` MLP stems, ``transformer.layers.{i}.{0: attention, 1: MLP}``
each wrapped in a pre-norm (``norm``, ``fn``), and a per-position output ``bias``. The output head
is the token embedding itself (tied weights). Sizes are options, so the same class serves the
ImageNet teacher (768 hidden, 24 layers) and the small Fashion-MNIST teacher.

Row layout of ``tok_emb``: [0, codebook) codes, ``codebook`` the mask, then one row per class
(label + codebook + 1), and the last row the null class used for classifier-free guidance.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dimo_core.init import perturb_embeddings

LAYER_NORM_EPS = 1e-12  # the stems use BERT's epsilon; the blocks keep PyTorch's default 1e-5


class PreNorm(nn.Module):
    """LayerNorm, then ``fn`` (the residual sum is done by the encoder)."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Full (bidirectional) self-attention; ``mha`` holds the packed q/k/v projection."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, bias=True, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dropout)),
                           PreNorm(dim, FeedForward(dim, mlp_dim, dropout))])
            for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for attention, mlp in self.layers:
            x = x + attention(x)
            x = x + mlp(x)
        return x


def _stem(hidden: int, dropout: float, with_output_linear: bool) -> nn.Sequential:
    """LN, dropout, linear, GELU, LN (+ dropout, linear for the input stem)."""
    layers = [nn.LayerNorm(hidden, eps=LAYER_NORM_EPS), nn.Dropout(dropout), nn.Linear(hidden, hidden),
              nn.GELU(), nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)]
    if with_output_linear:
        layers += [nn.Dropout(dropout), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers)


class MaskTransformer(nn.Module):
    """Visual tokens (B, L) + one class token -> logits (B, L, codebook + 1), as the v1.0 release.

    Defaults are the released ImageNet 256 model (174 M parameters)."""

    def __init__(self, hidden: int = 768, depth: int = 24, heads: int = 16, mlp: int = 3072,
                 codebook_size: int = 1024, num_classes: int = 1000, tokens: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.codebook_size, self.num_classes, self.tokens = codebook_size, num_classes, tokens
        rows = codebook_size + 1 + num_classes + 1
        self.tok_emb = nn.Embedding(rows, hidden)
        self.pos_emb = nn.Parameter(torch.zeros(1, tokens + 1, hidden))
        self.first_layer = _stem(hidden, dropout, with_output_linear=True)
        self.transformer = TransformerEncoder(hidden, depth, heads, mlp, dropout)
        self.last_layer = _stem(hidden, dropout, with_output_linear=False)
        self.bias = nn.Parameter(torch.zeros(tokens + 1, rows))
        # Small initial embeddings keep the tied-head logits near zero when training from scratch
        # (the release keeps PyTorch's N(0, 1); released weights overwrite either choice).
        nn.init.trunc_normal_(self.tok_emb.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    def class_rows(self, labels: Tensor) -> Tensor:
        """Embedding row of each label; label ``num_classes`` is the null class (last row)."""
        if labels.dtype.is_floating_point or labels.dim() != 1:
            raise ValueError(f"class labels must be an integer tensor of shape (B,), got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        return labels + self.codebook_size + 1

    def release_logits(self, tokens: Tensor, labels: Tensor, embedding_noise: float = 0.0,
                       generator: torch.Generator | None = None) -> Tensor:
        """Logits (B, L, codebook + 1), the mask column included, exactly as the release slices them.

        ``tokens``: (B, L) or (B, h, w) codes or the mask id; ``labels``: (B,) in [0, num_classes],
        num_classes meaning "no class". ``embedding_noise`` perturbs the visual-token embeddings only,
        with noise drawn from ``generator``."""
        b = tokens.shape[0]
        tokens = tokens.reshape(b, -1)
        if tokens.shape[1] != self.tokens:
            raise ValueError(f"expected {self.tokens} tokens per sample, got {tokens.shape[1]}")
        visual = perturb_embeddings(self.tok_emb(tokens), embedding_noise, generator)
        cls = self.tok_emb(self.class_rows(labels.to(tokens.device))).unsqueeze(1)
        x = torch.cat([visual, cls], dim=1) + self.pos_emb
        x = self.last_layer(self.transformer(self.first_layer(x)))
        logits = x @ self.tok_emb.weight.T + self.bias  # tied head: scores against every embedding row
        return logits[:, :self.tokens, :self.codebook_size + 1]

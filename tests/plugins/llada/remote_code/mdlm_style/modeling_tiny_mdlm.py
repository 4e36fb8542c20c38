"""An MDLM-shaped test model in the style of the published MDLM Hugging Face code (a DiT with
adaptive layer norm conditioned on the noise level, transformers 4.x era).

What matters for loading and calling is kept: AutoModelForMaskedLM in auto_map, a backbone whose
token embedding is a bare parameter (``backbone.vocab_embed``, no get_input_embeddings), a
``forward(input_ids, timesteps)`` that needs the noise level (MDLM feeds zeros when the model is
not time-conditioned) and takes no attention mask, and a bare logits tensor as output.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny_mdlm import TinyMDLMConfig


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(vocab, dim) * 0.02)

    def forward(self, x):
        return self.embedding[x]


class TimestepEmbedder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], -1).to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.hidden_dim
        self.heads = config.n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d, elementwise_affine=False)
        self.attn_qkv, self.attn_out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.adaLN_modulation = nn.Linear(config.cond_dim, 4 * d)

    def forward(self, x, c):
        b, t, d = x.shape
        shift1, scale1, shift2, scale2 = self.adaLN_modulation(c)[:, None].chunk(4, -1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.attn_qkv(h).chunk(3, -1))
        x = x + self.attn_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class DiTBackbone(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.vocab_embed = EmbeddingLayer(config.hidden_dim, config.vocab_size)
        self.pos_embed = nn.Parameter(torch.randn(512, config.hidden_dim) * 0.02)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = nn.Linear(config.hidden_dim, config.vocab_size)

    def forward(self, indices, sigma):
        if sigma is None:
            raise TypeError("the noise level sigma is required")
        x = self.vocab_embed(indices) + self.pos_embed[: indices.shape[1]]
        c = F.silu(self.sigma_map(sigma))
        for block in self.blocks:
            x = block(x, c)
        return self.output_layer(x)


class TinyMDLM(PreTrainedModel):
    config_class = TinyMDLMConfig
    base_model_prefix = "backbone"

    def __init__(self, config):
        super().__init__(config)
        self.backbone = DiTBackbone(config)

    def forward(self, input_ids=None, timesteps=None, output_hidden_states=None, return_dict=None):
        return self.backbone(input_ids, timesteps)

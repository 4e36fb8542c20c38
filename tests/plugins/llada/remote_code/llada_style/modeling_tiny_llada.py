"""A LLaDA-shaped test model in the style of the published modeling_llada.py (transformers 4.x era).

What matters for loading is kept: an OLMo-like inner module (model.transformer.{wte, blocks, ln_f,
ff_out}) wrapped by a PreTrainedModel subclass whose __init__ never calls post_init(), a
tie_weights() without arguments, a 2-D attention_mask argument, and AutoModel registration at
import time. The network itself is a small bidirectional RMSNorm / rotary / SwiGLU transformer.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tiny_llada import TinyLLaDAConfig


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, theta):
    """Rotary positions 0..T-1 on (B, H, T, D)."""
    t, d = x.shape[-2], x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    angles = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * freqs
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    first, second = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-second, first], -1) * sin


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.heads, self.theta = config.n_heads, config.rope_theta
        self.attn_norm, self.ff_norm = RMSNorm(d, config.rms_norm_eps), RMSNorm(d, config.rms_norm_eps)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(self, x, bias):
        b, t, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotate(q, self.theta), rotate(k, self.theta)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.attn_out(a.transpose(1, 2).reshape(b, t, d))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class TinyLLaDAModel(nn.Module):
    def __init__(self, config, init_params=False):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.embedding_size, config.d_model),
            blocks=nn.ModuleList(Block(config) for _ in range(config.n_layers)),
            ln_f=RMSNorm(config.d_model, config.rms_norm_eps)))
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=False)

    def forward(self, input_ids, attention_mask=None):
        x = self.transformer.wte(input_ids)
        bias = None
        if attention_mask is not None:   # padding keys get -inf, as LLaDA's attention bias
            bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
            bias = bias.masked_fill(attention_mask == 0, -math.inf)[:, None, None, :]
        for block in self.transformer.blocks:
            x = block(x, bias)
        x = self.transformer.ln_f(x)
        if self.config.weight_tying:
            return F.linear(x, self.transformer.wte.weight)
        return self.transformer.ff_out(x)


class TinyLLaDAModelLM(PreTrainedModel):
    config_class = TinyLLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config: TinyLLaDAConfig, model: Optional[TinyLLaDAModel] = None, init_params: bool = False):
        super().__init__(config)
        self.model = model or TinyLLaDAModel(config, init_params=init_params)
        # no self.post_init(): the published file predates transformers 5's tied-weights bookkeeping

    def forward(self, input_ids=None, attention_mask=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        logits = self.model(input_ids, attention_mask)
        return CausalLMOutputWithPast(logits=logits) if return_dict else (logits,)

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def set_input_embeddings(self, value):
        self.model.transformer.wte = value

    def get_output_embeddings(self):
        return self.model.transformer.wte if self.config.weight_tying else self.model.transformer.ff_out

    def tie_weights(self):   # the 4.x signature: no arguments
        if self.config.weight_tying:
            self.model.transformer.ff_out = self.model.transformer.wte


AutoModel.register(TinyLLaDAConfig, TinyLLaDAModelLM)

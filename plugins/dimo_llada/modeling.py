"""A small LLaDA-like transformer as Hugging Face classes, so bundled weights load like real ones.

Pre-norm blocks with RMSNorm, rotary positions and a SwiGLU MLP, as in LLaDA-8B, at CPU size.
``DimoLladaForMaskedLM`` attends bidirectionally (the masked diffusion teacher);
``DimoReferenceLM`` is the same stack with a causal mask (the autoregressive scorer of generated
text). Both are registered with the Auto classes on import, so ``AutoModelForMaskedLM`` /
``AutoModelForCausalLM.from_pretrained(folder)`` finds them without ``trust_remote_code``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutput, MaskedLMOutput

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # transformers before 4.52: the same switch, which gradient_checkpointing_enable() sets
    class GradientCheckpointingLayer(nn.Module):
        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training:
                return self._gradient_checkpointing_func(super().__call__, *args, **kwargs)
            return super().__call__(*args, **kwargs)


class DimoLladaConfig(PretrainedConfig):
    # Fields in transformers' dataclass style: each becomes a constructor keyword and a config.json key.
    model_type = "dimo_llada"

    vocab_size: int = 2048
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512              # SwiGLU width (LLaDA-8B: 12288 for hidden 4096)
    max_position_embeddings: int = 256        # rotary: a limit we check, not a table
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    mask_token_id: int | None = None          # read by the teacher wrapper, never guessed
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = False         # untied, as LLaDA-8B (and safetensors stores no shared tensors)


class DimoReferenceLMConfig(DimoLladaConfig):
    model_type = "dimo_reference_lm"


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (B, 1, T, head_dim) for integer positions (B, T)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq                      # (B, T, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(GradientCheckpointingLayer):
    """Pre-norm attention + SwiGLU MLP; the attention mask decides bidirectional or causal."""

    def __init__(self, config: DimoLladaConfig):
        super().__init__()
        d, self.heads = config.hidden_size, config.num_attention_heads
        self.attn_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.mlp_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.gate_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, d, bias=False)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor:
        b, t, d = h.shape
        x = self.attn_norm(h)
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None)
        h = h + self.o_proj(a.transpose(1, 2).reshape(b, t, d))
        x = self.mlp_norm(h)
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DimoLladaPreTrainedModel(PreTrainedModel):
    config_class = DimoLladaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]


class DimoLladaModel(DimoLladaPreTrainedModel):
    """Embedding, blocks and final norm: hidden states (B, T, hidden_size)."""

    causal = False

    def __init__(self, config: DimoLladaConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, t, _ = h.shape
        if t > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {t} tokens is longer than max_position_embeddings="
                             f"{self.config.max_position_embeddings} of this checkpoint")
        attn_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # Left padding: positions count real tokens only, so a padded prompt reads like an unpadded one.
            keep = attention_mask.bool()
            positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
            attn_mask = keep[:, None, None, :]                                   # (B, 1, 1, T): keys
            if self.causal:
                attn_mask = attn_mask & torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
            attn_mask = attn_mask | torch.eye(t, dtype=torch.bool, device=h.device)  # pad rows stay finite
        else:
            positions = torch.arange(t, device=h.device).expand(b, t)
        cos, sin = rotary_cos_sin(positions, self.config.hidden_size // self.config.num_attention_heads,
                                  self.config.rope_theta, h.dtype)
        for layer in self.layers:
            h = layer(h, cos, sin, attn_mask, self.causal)
        return self.norm(h)


class DimoCausalModel(DimoLladaModel):
    causal = True


class DimoLladaForMaskedLM(DimoLladaPreTrainedModel):
    """The bidirectional mask predictor: ``model(input_ids).logits`` of shape (B, T, vocab_size)."""

    backbone_class = DimoLladaModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DimoLladaConfig):
        super().__init__(config)
        self.model = self.backbone_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None, **kwargs) -> MaskedLMOutput:
        logits = self.lm_head(self.model(input_ids, attention_mask, inputs_embeds))
        loss = None
        if labels is not None:  # HF convention: -100 = ignored position
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)


class DimoReferenceLM(DimoLladaForMaskedLM):
    """The causal scorer: logits at position i predict token i + 1."""

    config_class = DimoReferenceLMConfig
    backbone_class = DimoCausalModel

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None, **kwargs) -> CausalLMOutput:
        logits = self.lm_head(self.model(input_ids, attention_mask, inputs_embeds))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)


AutoConfig.register(DimoLladaConfig.model_type, DimoLladaConfig, exist_ok=True)
AutoConfig.register(DimoReferenceLMConfig.model_type, DimoReferenceLMConfig, exist_ok=True)
AutoModelForMaskedLM.register(DimoLladaConfig, DimoLladaForMaskedLM, exist_ok=True)
AutoModelForCausalLM.register(DimoReferenceLMConfig, DimoReferenceLM, exist_ok=True)

"""Meissonic's masked image transformer (MeissonFlow/Meissonic ``src/transformer.py``), in plain PyTorch.

Written from the release's facts so that its checkpoint loads key for key, at any size:
- ``embed``: token embedding (vocab rows, the mask id last), RMSNorm, 1x1 conv; ``down_block``
  optionally halves the token grid (2x2 conv, stride 2) and ``up_block`` doubles it back
  (transposed conv), so 64 x 64 codes run as 32 x 32 tokens inside the transformer;
- ``cond_embed``: the pooled text embedding concatenated with the sinusoidal embeddings of the
  five micro-conditions [W, H, crop_x, crop_y, aesthetic] (256 values each), then an MLP;
  ``time_text_embed``: timestep MLP + projection of that vector, summed into one modulation vector;
- ``transformer_blocks``: dual-stream (MMDiT) blocks, text and image with their own weights and
  one joint attention; ``single_transformer_blocks``: one stream over [text, image] with parallel
  attention and MLP; both modulated by AdaLayerNorm-Zero; RMS-normalised queries and keys;
  rotary position embeddings over (0, row, col) ids, text ids all zero;
- ``mlm_layer``: 1x1 conv, RMSNorm, 1x1 conv to ``codebook_size`` logits (the mask has no column).

The defaults are the released 1024 px model (1024 hidden = 8 heads x 128, 14 dual + 28 single blocks,
vocab 8256, codebook 8192, CLIP-H text features of 1024). The ``timestep`` argument is multiplied
by 1000 inside, as in the release; what a caller passes there is a convention (see teacher.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from dimo_core.attention import attention
from dimo_core.init import perturb_embeddings

NORM_EPS = 1e-6            # every RMSNorm / LayerNorm of the release
MICRO_COND_CHANNELS = 256  # sinusoidal channels per micro-condition (as aMUSEd)
MICRO_CONDS = 5            # [W, H, crop_x, crop_y, aesthetic score]
TIMESTEP_CHANNELS = 256
ROPE_THETA = 10000.0


def sinusoidal_embedding(values: Tensor, channels: int, max_period: float = 10000.0) -> Tensor:
    """(N,) -> (N, channels): [cos, sin] of values * exp(-log(max_period) * k / (channels / 2)).

    The release's ``get_timestep_embedding(..., flip_sin_to_cos=True, downscale_freq_shift=0)``."""
    half = channels // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension (computed in float32)."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class ChannelRMSNorm(RMSNorm):
    """RMSNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MLP(nn.Module):
    """linear_1, SiLU, linear_2: diffusers' TimestepEmbedding / PixArtAlphaTextProjection."""

    def __init__(self, dim_in: int, dim: int, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim, bias=bias)
        self.linear_2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeTextEmbedding(nn.Module):
    """Modulation vector = MLP(sinusoid(timestep)) + MLP(pooled conditioning)."""

    def __init__(self, dim: int, pooled_dim: int):
        super().__init__()
        self.timestep_embedder = MLP(TIMESTEP_CHANNELS, dim)
        self.text_embedder = MLP(pooled_dim, dim)

    def forward(self, timestep: Tensor, pooled: Tensor) -> Tensor:
        t = self.timestep_embedder(sinusoidal_embedding(timestep, TIMESTEP_CHANNELS).to(pooled.dtype))
        return t + self.text_embedder(pooled)


class AdaNormZero(nn.Module):
    """LayerNorm without affine, shifted/scaled by a projection of the modulation vector; the
    projection also returns the gates. ``chunks`` = 6 (dual-stream) or 3 (single-stream)."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.linear = nn.Linear(dim, chunks * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.chunks = chunks

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, ...]:
        shift, scale, gate, *rest = self.linear(F.silu(emb)).chunk(self.chunks, dim=1)
        return (self.norm(x) * (1 + scale[:, None]) + shift[:, None], gate, *rest)


class GeluProjection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """dim -> 4 dim (tanh GELU) -> dim; ``net`` indices as in diffusers (1 is a dropout)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GeluProjection(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def rotary_tables(ids: Tensor, axes_dims: tuple[int, ...], theta: float = ROPE_THETA) -> tuple[Tensor, Tensor]:
    """cos and sin (S, head_dim) for position ids (S, n_axes); each axis gets ``axes_dims[i]``
    channels, frequencies repeated pairwise (Flux's layout)."""
    cos, sin = [], []
    for axis, dim in enumerate(axes_dims):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim)
        angles = ids[:, axis].double()[:, None] * freqs[None]
        cos.append(angles.cos().repeat_interleave(2, dim=1).float())
        sin.append(angles.sin().repeat_interleave(2, dim=1).float())
    return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)


def apply_rotary(x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate channel pairs (2k, 2k+1) of x (B, heads, S, head_dim) by the angles of ``rotary``."""
    cos, sin = rotary
    real, imag = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised q/k and rotary embeddings.

    ``joint``: a second (text) stream with its own projections (``add_*_proj``, ``to_add_out``),
    concatenated before the image stream. ``pre_only`` (single-stream blocks): no output projection."""

    def __init__(self, dim: int, heads: int, head_dim: int, joint: bool = False, pre_only: bool = False):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
        if joint:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, inner) for _ in range(3))
            self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
            self.to_add_out = nn.Linear(inner, dim)
        if not pre_only:
            self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self.joint, self.pre_only = joint, pre_only

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], context: Tensor | None = None):
        q, k = self.norm_q(self._heads(self.to_q(x))), self.norm_k(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        if self.joint:  # text first, as the rotary ids
            q = torch.cat([self.norm_added_q(self._heads(self.add_q_proj(context))), q], dim=2)
            k = torch.cat([self.norm_added_k(self._heads(self.add_k_proj(context))), k], dim=2)
            v = torch.cat([self._heads(self.add_v_proj(context)), v], dim=2)
        out = attention(apply_rotary(q, rotary), apply_rotary(k, rotary), v)  # SDPA, or xformers if configured
        out = out.transpose(1, 2).reshape(x.shape[0], -1, self.heads * self.head_dim)
        if not self.joint:
            return out if self.pre_only else self.to_out[0](out)
        n_text = context.shape[1]
        return self.to_out[0](out[:, n_text:]), self.to_add_out(out[:, :n_text])


class TransformerBlock(nn.Module):
    """Dual-stream (MMDiT) block: image and text streams, each with AdaLN-Zero, joint attention, MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1, self.norm1_context = AdaNormZero(dim, 6), AdaNormZero(dim, 6)
        self.attn = Attention(dim, heads, head_dim, joint=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.ff, self.ff_context = FeedForward(dim), FeedForward(dim)

    def forward(self, image: Tensor, text: Tensor, emb: Tensor, rotary: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        image_in, gate, shift_mlp, scale_mlp, gate_mlp = self.norm1(image, emb)
        text_in, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(text, emb)
        image_attn, text_attn = self.attn(image_in, rotary, context=text_in)
        image = image + gate[:, None] * image_attn
        image = image + gate_mlp[:, None] * self.ff(self.norm2(image) * (1 + scale_mlp[:, None]) + shift_mlp[:, None])
        text = text + c_gate[:, None] * text_attn
        text = text + c_gate_mlp[:, None] * self.ff_context(
            self.norm2_context(text) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None])
        return text, image


class SingleTransformerBlock(nn.Module):
    """Single-stream block over [text, image]: attention and MLP in parallel, one output projection."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm = AdaNormZero(dim, 3)
        self.proj_mlp = nn.Linear(dim, mlp_ratio * dim)
        self.proj_out = nn.Linear(dim + mlp_ratio * dim, dim)
        self.attn = Attention(dim, heads, head_dim, pre_only=True)

    def forward(self, x: Tensor, emb: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        normed, gate = self.norm(x, emb)
        mlp = F.gelu(self.proj_mlp(normed), approximate="tanh")
        return x + gate[:, None] * self.proj_out(torch.cat([self.attn(normed, rotary), mlp], dim=2))


class ConvEmbed(nn.Module):
    """Token ids (B, H, W) -> (B, dim, H, W): embedding, RMSNorm, 1x1 conv."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, dim)
        self.layer_norm = RMSNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        return self.conv(self.layer_norm(self.embeddings(ids)).permute(0, 3, 1, 2))


class ConvMlmLayer(nn.Module):
    """(B, dim, H, W) -> logits (B, codebook_size, H, W)."""

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.layer_norm = ChannelRMSNorm(dim)
        self.conv2 = nn.Conv2d(dim, codebook_size, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.layer_norm(self.conv1(x)))


class Downsample(nn.Module):
    """RMSNorm, zero-pad right/bottom by one, 2x2 conv of stride 2: 64 -> 32 (even sizes only)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(self.norm(x), (0, 1, 0, 1)))


class Upsample(nn.Module):
    """RMSNorm, 2x2 transposed conv of stride 2: 32 -> 64."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.conv = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class Resample(nn.Module):
    """The release's ``down_block`` / ``up_block`` wrapper (an identity when disabled)."""

    def __init__(self, dim: int, downsample: bool = False, upsample: bool = False):
        super().__init__()
        self.downsample = Downsample(dim) if downsample else None
        self.upsample = Upsample(dim) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class MeissonicTransformer(nn.Module):
    """Token grid (B, H, W) + text -> logits (B, codebook_size, H, W), parameter names as released.

    Constructor arguments are the keys of the release's ``transformer/config.json``."""

    def __init__(self, num_layers: int = 14, num_single_layers: int = 28, attention_head_dim: int = 128,
                 num_attention_heads: int = 8, joint_attention_dim: int = 1024, pooled_projection_dim: int = 1024,
                 axes_dims_rope: tuple[int, ...] = (16, 56, 56), vocab_size: int = 8256, codebook_size: int = 8192,
                 downsample: bool = True, upsample: bool = True):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        if sum(axes_dims_rope) != attention_head_dim or any(d % 2 for d in axes_dims_rope):
            raise ValueError(f"axes_dims_rope {tuple(axes_dims_rope)} must be even and sum to attention_head_dim "
                             f"({attention_head_dim})")
        if pooled_projection_dim != dim:  # the release feeds cond_embed's output (dim) to a pooled_dim input
            raise ValueError(f"pooled_projection_dim ({pooled_projection_dim}) must equal the hidden size "
                             f"num_attention_heads x attention_head_dim ({dim}), as in the release")
        if downsample != upsample:
            raise ValueError("downsample and upsample must both be on (64 -> 32 -> 64) or both off")
        if vocab_size <= codebook_size:
            raise ValueError(f"vocab_size ({vocab_size}) must exceed codebook_size ({codebook_size}): "
                             f"the mask id is vocab_size - 1")
        self.config = dict(num_layers=num_layers, num_single_layers=num_single_layers,
                           attention_head_dim=attention_head_dim, num_attention_heads=num_attention_heads,
                           joint_attention_dim=joint_attention_dim, pooled_projection_dim=pooled_projection_dim,
                           axes_dims_rope=list(axes_dims_rope), vocab_size=vocab_size, codebook_size=codebook_size,
                           downsample=downsample, upsample=upsample)
        self.inner_dim, self.axes_dims_rope = dim, tuple(axes_dims_rope)
        self.codebook_size, self.downsample = codebook_size, downsample

        self.time_text_embed = TimeTextEmbedding(dim, pooled_projection_dim)
        self.context_embedder = nn.Linear(joint_attention_dim, dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_layers))
        self.single_transformer_blocks = nn.ModuleList(
            SingleTransformerBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_single_layers))
        self.embed = ConvEmbed(vocab_size, dim)
        self.mlm_layer = ConvMlmLayer(dim, codebook_size)
        self.cond_embed = MLP(MICRO_CONDS * MICRO_COND_CHANNELS + pooled_projection_dim, dim, bias=False)
        self.encoder_proj_layer_norm = RMSNorm(dim)
        self.project_to_hidden_norm = RMSNorm(dim)
        self.project_to_hidden = nn.Linear(dim, dim, bias=False)
        self.project_from_hidden_norm = RMSNorm(dim)
        self.project_from_hidden = nn.Linear(dim, dim, bias=False)
        self.down_block = Resample(dim, downsample=downsample)
        self.up_block = Resample(dim, upsample=upsample)
        self._init_for_training_from_scratch()

    def _init_for_training_from_scratch(self) -> None:
        """Small embeddings and zero AdaLN modulation (every block starts as the identity, as DiT);
        released weights overwrite all of it."""
        nn.init.trunc_normal_(self.embed.embeddings.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, AdaNormZero):
                nn.init.zeros_(module.linear.weight)
                nn.init.zeros_(module.linear.bias)

    def conditioning(self, pooled: Tensor, micro_conds: Tensor, timestep: Tensor) -> Tensor:
        """The modulation vector (B, dim) of every block."""
        micro = sinusoidal_embedding(micro_conds.flatten(), MICRO_COND_CHANNELS).reshape(pooled.shape[0], -1)
        pooled = self.cond_embed(torch.cat([pooled, micro.to(pooled.dtype)], dim=1))
        return self.time_text_embed(timestep * 1000, pooled)

    def rotary(self, n_text: int, height: int, width: int, device) -> tuple[Tensor, Tensor]:
        """Position ids: (0, 0, 0) for every text token, then (0, row, col) of the inner grid."""
        rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                    indexing="ij")
        image_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
        ids = torch.cat([torch.zeros(n_text, 3, dtype=image_ids.dtype, device=device), image_ids])
        return rotary_tables(ids, self.axes_dims_rope)

    def forward(self, tokens: Tensor, context: Tensor, pooled: Tensor, micro_conds: Tensor, timestep: Tensor,
                embedding_noise: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """tokens (B, H, W); context (B, T, joint_attention_dim); pooled (B, pooled_projection_dim);
        micro_conds (B, 5); timestep (B,) or (1,), multiplied by 1000 inside (as released).
        ``embedding_noise`` perturbs the image-token embeddings (the Di[M]O generator's sigma), with
        noise drawn from ``generator``."""
        if self.downsample and (tokens.shape[-2] % 2 or tokens.shape[-1] % 2):
            raise ValueError(f"down/upsampling needs an even token grid, got {tuple(tokens.shape[-2:])}")
        emb = self.conditioning(pooled, micro_conds, timestep)
        image = perturb_embeddings(self.embed(tokens), embedding_noise, generator)
        text = self.encoder_proj_layer_norm(self.context_embedder(context))
        image = self.down_block(image)
        b, channels, height, width = image.shape
        image = self.project_to_hidden(self.project_to_hidden_norm(image.permute(0, 2, 3, 1).reshape(b, -1, channels)))
        rotary = self.rotary(text.shape[1], height, width, tokens.device)
        for block in self.transformer_blocks:
            text, image = block(image, text, emb, rotary)
        joint = torch.cat([text, image], dim=1)
        for block in self.single_transformer_blocks:
            joint = block(joint, emb, rotary)
        image = self.project_from_hidden(self.project_from_hidden_norm(joint[:, text.shape[1]:]))
        image = self.up_block(image.reshape(b, height, width, channels).permute(0, 3, 1, 2))
        return self.mlm_layer(image)

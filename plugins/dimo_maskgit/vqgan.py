"""The VQGAN tokenizer of MaskGit: taming-transformers' VQModel (f16, 1024 codes at ImageNet 256).

Module names follow taming (``encoder.down.{i}.block.{j}.norm1``, ``quantize.embedding``,
``quant_conv``, ``post_quant_conv``, ...) so that its Lightning checkpoint ``last.ckpt`` loads key
for key. Only inference is here: no losses, no discriminator (their ``loss.*`` weights in the
checkpoint are dropped on purpose, see ``TRAINING_ONLY_PREFIXES``).

Images go in and come out as (B, 3, H, W) floats in [0, 1]; the [-1, 1] range taming works in
is handled inside. Codes are (B, h * w) in row-major order, h = H / 2^(levels - 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from dimo_core.checkpoint import load_state_dict_strict, load_tensors
from dimo_core.errors import CheckpointError

from .lightning import load_lightning_state_dict

TRAINING_ONLY_PREFIXES = ("loss.",)  # LPIPS + discriminator of VQLPIPSWithDiscriminator


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map, 1x1 convolutions as projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, c, h * w).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom only


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attns: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    return level


def _middle(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_middle(mid: nn.Module, h: Tensor) -> Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_level(level: nn.Module, h: Tensor) -> Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
                 in_channels: int, resolution: int, z_channels: int, double_z: bool = True,
                 dropout: float = 0.0, **_unused):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, block_in = resolution, ch
        for i, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, dropout))
                block_in = ch * mult
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _middle(block_in, dropout)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_middle(self.mid, h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch: int, out_ch: int, ch_mult: list[int], num_res_blocks: int,
                 attn_resolutions: list[int], resolution: int, z_channels: int, dropout: float = 0.0,
                 **_unused):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _middle(block_in, dropout)
        levels = []  # built from the lowest resolution up; stored so that up[i] is level i
        for i in reversed(range(self.num_resolutions)):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[i], dropout))
                block_in = ch * ch_mult[i]
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation (taming's VectorQuantizer2 at inference)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def codes(self, z: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h * w) indices of the nearest embedding (squared Euclidean)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.embedding.weight
        dist = (e ** 2).sum(1) - 2 * flat @ e.T  # |z|^2 is the same for every code
        return dist.argmin(1).reshape(z.shape[0], -1)

    def lookup(self, codes: Tensor, h: int, w: int) -> Tensor:
        return self.embedding(codes).reshape(codes.shape[0], h, w, -1).permute(0, 3, 1, 2)


class VQModel(nn.Module):
    """taming.models.vqgan.VQModel without its training parts; ``VQModel(**model.params)``."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int, remap: Any = None, **_unused):
        super().__init__()
        if remap is not None:
            raise CheckpointError("VQGAN configs with a code remap (model.params.remap) are not supported")
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.downsample_factor = 2 ** (len(ddconfig["ch_mult"]) - 1)


class VQGANTokenizer:
    """Tokenizer protocol over a VQModel: images (B, 3, H, W) in [0, 1] <-> codes (B, h * w)."""

    mask_id = None

    def __init__(self, model: VQModel, resolution: int):
        self.model = model.eval()
        self.vocab_size = model.n_embed
        side = resolution // model.downsample_factor
        self.grid = (side, side)
        self.seq_len = side * side

    def to(self, device) -> "VQGANTokenizer":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        z = self.model.quant_conv(self.model.encoder(images.to(self.device).float() * 2 - 1))
        return self.model.quantize.codes(z)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        h, w = self.grid
        if tokens.shape[-1] != h * w:
            raise ValueError(f"expected {h * w} codes per image ({h} x {w}), got {tokens.shape[-1]}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"codes must lie in [0, {self.vocab_size}) (a mask id left in the sample?)")
        z = self.model.quantize.lookup(tokens.reshape(tokens.shape[0], -1).to(self.device), h, w)
        images = self.model.decoder(self.model.post_quant_conv(z))
        return ((images.clamp(-1, 1) + 1) / 2)


# -- loading a local folder ------------------------------------------------------------------------

CONFIG_CANDIDATES = ("model.yaml", "configs/model.yaml")            # flat (HF mirror) / taming layout
WEIGHT_CANDIDATES = ("last.ckpt", "ckpts/last.ckpt", "model.safetensors", "last.safetensors",
                     "ckpts/last.safetensors")


def _find(folder: Path, candidates: tuple[str, ...], what: str) -> Path:
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no VQGAN {what} in {folder}; looked for {', '.join(candidates)}")


def read_model_params(config_path: Path) -> dict:
    """``model.params`` of a taming config as plain data. Interpolations are not resolved and
    ``target`` is never imported: the file only describes sizes."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    except Exception as e:
        raise CheckpointError(f"{config_path} is not a readable YAML config ({e})") from None
    params = (cfg.get("model") or {}).get("params") if isinstance(cfg, dict) else None
    needed = ("ddconfig", "n_embed", "embed_dim")
    if not isinstance(params, dict) or any(k not in params for k in needed):
        raise CheckpointError(f"{config_path} lacks model.params.{{{', '.join(needed)}}} of a taming VQModel")
    return params


def read_vqgan_state_dict(path: Path) -> dict[str, Tensor]:
    state = load_tensors(path)[0] if path.suffix == ".safetensors" else load_lightning_state_dict(path)
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def load_vqgan(folder: str | Path) -> VQGANTokenizer:
    """A VQGAN from a local folder: model.yaml + last.ckpt, flat or configs/ + ckpts/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"VQGAN folder {folder} does not exist (expected model.yaml and last.ckpt, "
                              f"flat or under configs/ and ckpts/)")
    params = read_model_params(_find(folder, CONFIG_CANDIDATES, "config"))
    weights = _find(folder, WEIGHT_CANDIDATES, "checkpoint")
    model = VQModel(**params)
    load_state_dict_strict(model, read_vqgan_state_dict(weights), str(weights))
    return VQGANTokenizer(model, int(params["ddconfig"]["resolution"]))

"""Tiny Meissonic folders in the release layout, for tests and for trying the loading path without the
real weights: transformer/ (config.json as the release writes it + safetensors), text_encoder/
(CLIPTextModelWithProjection.save_pretrained), tokenizer/ (CLIPTokenizer.save_pretrained)."""
from __future__ import annotations

from pathlib import Path

import torch

from dimo_core.checkpoint import save_json, save_tensors

from .teacher import CONFIG_FILE, WEIGHTS_FILE, MeissonicTransformer
from .text import build_clip_tokenizer, tiny_clip_text_config

TINY_WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "car", "on", "the", "grass", ","]
# heads x head_dim = 2 x 16 = 32 = pooled_projection_dim (the release's architecture requires it)
TINY_ARCHITECTURE = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                         joint_attention_dim=24, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6],
                         vocab_size=40, codebook_size=32, downsample=True, upsample=True)


def release_config(architecture: dict) -> dict:
    """config.json as the release writes it (diffusers bookkeeping and unused keys included)."""
    return {"_class_name": "Transformer2DModel", "_diffusers_version": "0.30.0.dev0", "patch_size": 1,
            "in_channels": 64, "guidance_embeds": False, **architecture}


def write_tiny_meissonic(folder: str | Path, architecture: dict | None = None, max_length: int = 8,
                         seed: int = 0) -> Path:
    """A random tiny Meissonic (no vqvae/: the VQ model needs diffusers) under ``folder``."""
    from transformers import CLIPTextModelWithProjection
    folder = Path(folder)
    architecture = dict(architecture or TINY_ARCHITECTURE)
    torch.manual_seed(seed)
    transformer = MeissonicTransformer(**architecture)
    with torch.no_grad():  # non-zero modulation, so that every input reaches the output
        for p in transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_json(folder / "transformer" / CONFIG_FILE, release_config(architecture))
    save_tensors(folder / "transformer" / WEIGHTS_FILE, transformer.state_dict())
    tokenizer = build_clip_tokenizer(TINY_WORDS, max_length)
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    config = tiny_clip_text_config(len(tokenizer), max_length, architecture["pooled_projection_dim"],
                                   hidden_size=architecture["joint_attention_dim"], layers=2, heads=2)
    CLIPTextModelWithProjection(config).save_pretrained(str(folder / "text_encoder"))
    return folder

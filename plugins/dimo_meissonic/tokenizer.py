"""Image tokenizers: the release's VQ model (diffusers ``VQModel``, optional) or the bundled patch VQ.

The real Meissonic folder holds ``vqvae/`` (a diffusers VQModel, 8192 codes, 16x downsampling:
1024 px -> 64 x 64 codes); loading it needs the optional extra ``pip install 'dimo[meissonic]'``
(diffusers). The bundled Fashion-MNIST default uses the Fashion-MNIST bench's k-means patch tokenizer (dimo_fmnist).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.errors import CheckpointError, ConfigError

EXTRA_HINT = "pip install 'dimo[meissonic]' (it adds diffusers>=0.30, which provides VQModel)"


def import_vq_model():
    try:
        from diffusers import VQModel
    except ImportError:
        raise ConfigError(f"the Meissonic VQ model needs diffusers, which is not installed: {EXTRA_HINT}") from None
    return VQModel


class DiffusersVQTokenizer:
    """Tokenizer protocol over a diffusers VQModel: images (B, 3, H, W) in [0, 1] -> codes
    (B, H/f * W/f), row-major; decode as Meissonic's pipeline does (codebook lookup, clip to [0, 1])."""

    mask_id = None

    def __init__(self, vq_model):
        self.vq = vq_model.eval().requires_grad_(False)
        self.vocab_size = int(vq_model.config.num_vq_embeddings)
        self.scale = 2 ** (len(vq_model.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        device = next(self.vq.parameters()).device
        latents = self.vq.encode(images.float().to(device)).latents
        indices = self.vq.quantize(latents)[2][2]
        return indices.reshape(images.shape[0], -1)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        b, length = tokens.shape
        side = int(round(length ** 0.5))
        if side * side != length:
            raise ValueError(f"expected a square grid of codes, got {length} per image")
        device = next(self.vq.parameters()).device
        return self.vq.decode(tokens.reshape(b, side, side).to(device), force_not_quantize=True,
                              shape=(b, side, side, self.vq.config.latent_channels)).sample.clip(0, 1)


def load_vq_tokenizer(path: str | Path, device: torch.device | str = "cpu") -> DiffusersVQTokenizer:
    """``path/vqvae`` (or ``path`` itself) as a diffusers VQModel, local files only."""
    path = Path(path)
    folder = path / "vqvae" if (path / "vqvae").is_dir() else path
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"no VQ model at {folder} (expected vqvae/config.json in a Meissonic folder)")
    vq_model = import_vq_model().from_pretrained(str(folder), local_files_only=True)
    return DiffusersVQTokenizer(vq_model.to(device))


def load_patch_tokenizer(path: str | Path | None = None):
    """The Fashion-MNIST bench's patch tokenizer (its committed 256-code asset by default)."""
    from dimo_fmnist.patch_vq import BUNDLED, PatchVQTokenizer
    path = Path(path) if path else BUNDLED
    if not path.is_file():
        raise CheckpointError(f"missing patch tokenizer {path}; build it with `python -m dimo_fmnist.build_assets "
                              f"tokenizer` (the bench's asset)")
    return PatchVQTokenizer.load(path)

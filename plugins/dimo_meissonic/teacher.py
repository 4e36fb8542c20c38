"""Meissonic as a dimo Teacher: flat tokens (B, L) + a prompt-embedding dict -> logits (B, L, codebook).

The condition batch is a dict of tensors precomputed by the frozen text encoder (``text.py``):
``context`` (B, T, D_text) = CLIP hidden_states[-2], ``pooled`` (B, D) = CLIP text_embeds,
``micro_conds`` (B, 5) = [W, H, crop_x, crop_y, aesthetic]; other keys (``label``, ``prompt_id``)
ride along for metrics and are ignored here.

Timestep conventions (option ``timestep``; the transformer multiplies what it gets by 1000):
- ``mask_ratio``: 1000 x the fraction of masked tokens in the input, as Meissonic's training passes
  ``mask_prob * 1000``; read from the tokens themselves, so teacher, generator and aux agree on any
  input (the bundled Fashion-MNIST teacher was trained this way);
- ``step_index``: the pipeline's convention, ``N - 1 - i`` at step i of an N-step cosine schedule
  (N = ``reference_steps``); a token ratio r maps to the step whose input has that ratio;
- ``zero``: what the Di[M]O release effectively passes (it casts the ratio to an integer before
  multiplying by 1000, which is 0 for every ratio below 1); needed to sample its released student.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from dimo_core.checkpoint import load_json, load_state_dict_strict, load_tensors, save_json, save_tensors
from dimo_core.errors import CheckpointError, ConfigError

from .transformer import MeissonicTransformer

TimestepConvention = Literal["mask_ratio", "step_index", "zero"]
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
# config.json keys of the release that this implementation accepts but has no use for
IGNORED_CONFIG_KEYS = {"patch_size", "in_channels", "guidance_embeds"}
REQUIRED_COND_KEYS = ("context", "pooled", "micro_conds")
_ARCHITECTURE_KEYS = ("num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
                      "joint_attention_dim", "pooled_projection_dim", "axes_dims_rope", "vocab_size", "codebook_size",
                      "downsample", "upsample")


class MeissonicTeacher(MeissonicTransformer):
    """Teacher protocol over the release's transformer (parameter names unchanged, so ``distill.frozen``
    reads ``embed.*`` and ``mlm_layer.*`` as in the release).

    ``vocab_size`` = codebook_size (the logit columns), ``mask_id`` = the config's vocab_size - 1
    (8255 for the release; outside the logit columns), ``seq_len`` = grid_size^2 row-major codes."""

    def __init__(self, grid_size: int = 64, timestep: TimestepConvention = "mask_ratio", reference_steps: int = 48,
                 **architecture):
        super().__init__(**architecture)
        self.grid_size, self.timestep, self.reference_steps = grid_size, timestep, reference_steps
        self.vocab_size = self.codebook_size
        self.mask_id = self.config["vocab_size"] - 1
        self.seq_len = grid_size * grid_size

    def timesteps(self, tokens: Tensor) -> Tensor:
        """The value passed as the transformer's ``timestep`` (B,), from the masked ratio of each row."""
        ratio = (tokens == self.mask_id).float().mean(1)
        if self.timestep == "mask_ratio":
            return ratio * 1000
        if self.timestep == "zero":
            return torch.zeros_like(ratio)
        # step i of the pipeline's cosine schedule sees cos(pi/2 * i / N) masked and passes N - 1 - i
        n = self.reference_steps
        step = torch.round(torch.arccos(ratio.clamp(0, 1)) * 2 / math.pi * n)
        return (n - 1 - step).clamp(0, n - 1)

    def forward(self, tokens: Tensor, cond: dict[str, Tensor], embedding_noise: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(cond, dict) or any(k not in cond for k in REQUIRED_COND_KEYS):
            got = sorted(cond) if isinstance(cond, dict) else type(cond).__name__
            raise ConfigError(f"the meissonic teacher needs prompt conditions with keys "
                              f"{', '.join(REQUIRED_COND_KEYS)} (conditions: captions or prompt_files), got {got}")
        b = tokens.shape[0]
        if tokens.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tokens ({self.grid_size} x {self.grid_size}), "
                             f"got {tokens.shape[1]}")
        grid = tokens.reshape(b, self.grid_size, self.grid_size)
        logits = super().forward(grid, cond["context"], cond["pooled"], cond["micro_conds"], self.timesteps(tokens),
                                 embedding_noise, generator)
        return logits.reshape(b, self.codebook_size, self.seq_len).transpose(1, 2)


# ---- loading ----------------------------------------------------------------------------------------
def read_config(folder: Path) -> dict:
    """Architecture from a release-layout ``transformer/config.json`` (diffusers bookkeeping dropped)."""
    raw = load_json(folder / CONFIG_FILE)
    if raw.get("guidance_embeds"):
        raise CheckpointError(f"{folder / CONFIG_FILE}: guidance_embeds=true is not Meissonic's architecture")
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in _ARCHITECTURE_KEYS
                     and k not in IGNORED_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{folder / CONFIG_FILE} has keys this implementation does not know: "
                              f"{', '.join(unknown)}")
    config = {k: raw[k] for k in _ARCHITECTURE_KEYS if k in raw}
    if "axes_dims_rope" in config:
        config["axes_dims_rope"] = tuple(config["axes_dims_rope"])
    return config



def transformer_folder(path: Path) -> Path | None:
    """The folder holding config.json + weights: ``path`` itself or ``path/transformer`` (release layout)."""
    for folder in (path / "transformer", path):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


def read_weights(folder: Path) -> dict[str, Tensor]:
    """One safetensors file, or the shards named by its ``.index.json`` (large checkpoints)."""
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        state = {}
        for shard in sorted(set(load_json(index)["weight_map"].values())):
            state.update(load_tensors(folder / shard)[0])
        return state
    return load_tensors(folder / WEIGHTS_FILE)[0]


def build_teacher(path: str | Path | None = None, *, grid_size: int = 64, timestep: TimestepConvention = "mask_ratio",
                  reference_steps: int = 48, **architecture) -> MeissonicTeacher:
    """A teacher from a release-layout folder (``transformer/config.json`` + safetensors), a transformer
    folder, a ``.safetensors`` file (``dimo train-teacher`` output; architecture from the options), or
    fresh (path None). Architecture options set to None are taken from the folder's config.json; set
    ones must agree with it. Weights load strictly (missing/unexpected keys are named)."""
    given = {k: v for k, v in architecture.items() if v is not None}
    unknown = sorted(set(given) - set(_ARCHITECTURE_KEYS))
    if unknown:
        raise ConfigError(f"unknown architecture options {', '.join(unknown)}; valid: {', '.join(_ARCHITECTURE_KEYS)}")
    if "axes_dims_rope" in given:
        given["axes_dims_rope"] = tuple(given["axes_dims_rope"])
    state, source = None, None
    if path is not None:
        path = Path(path)
        folder = transformer_folder(path) if path.is_dir() else None
        if folder is not None:
            config = read_config(folder)
            clashes = [f"{k}={given[k]!r} (config.json: {config[k]!r})"
                       for k in given if k in config and config[k] != given[k]]
            if clashes:
                raise ConfigError(f"teacher options disagree with {folder / CONFIG_FILE}: {'; '.join(clashes)}; "
                                  f"drop them (the folder defines the architecture)")
            given = {**config, **given}
            state, source = read_weights(folder), str(folder)
        elif path.suffix == ".safetensors":
            state, source = load_tensors(path)[0], str(path)
        else:
            raise CheckpointError(f"teacher path {path} is neither a folder with {CONFIG_FILE} (or transformer/"
                                  f"{CONFIG_FILE}) nor a .safetensors file")
    teacher = MeissonicTeacher(grid_size=grid_size, timestep=timestep, reference_steps=reference_steps, **given)
    if state is not None:
        load_state_dict_strict(teacher, state, source)
    return teacher


def save_transformer_folder(teacher: MeissonicTransformer, folder: str | Path, **metadata) -> Path:
    """Write ``folder/config.json`` + ``folder/diffusion_pytorch_model.safetensors`` (the release layout)."""
    folder = Path(folder)
    save_json(folder / CONFIG_FILE, {"_class_name": "Transformer2DModel", **teacher.config})
    save_tensors(folder / WEIGHTS_FILE, teacher.state_dict(), metadata)
    return folder

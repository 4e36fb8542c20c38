"""The MaskGit teacher in dimo's Teacher protocol, and loading its released or small checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.checkpoint import load_state_dict_strict, load_tensors, load_torch_weights_only, save_tensors
from dimo_core.errors import CheckpointError

from .transformer import MaskTransformer

BUNDLED = Path(__file__).parent / "assets" / "fmnist_teacher.safetensors"


class MaskGitTeacher(MaskTransformer):
    """Teacher protocol over the v1.0 network: tokens (B, L) -> logits (B, L, codebook_size).

    The mask column of the released logits is sliced away so that it is never sampled;
    ``mask_id`` = codebook_size. ``cond`` holds class labels (B,) as int64, the label
    ``num_classes`` meaning the null class (``ClassLabels.null``); ``None`` means unconditional.
    Parameter names equal the release's, so ``frozen`` lists read ``tok_emb.weight``, ``bias``,
    ``pos_emb``."""

    def __init__(self, **architecture):
        super().__init__(**architecture)
        self.vocab_size = self.codebook_size
        self.mask_id = self.codebook_size
        self.seq_len = self.tokens

    def forward(self, tokens: Tensor, cond: Tensor | None, embedding_noise: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
        if cond is None:
            cond = torch.full((tokens.shape[0],), self.num_classes, dtype=torch.long, device=tokens.device)
        return self.release_logits(tokens, cond, embedding_noise, generator)[..., :self.codebook_size]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Weights from a safetensors file, or from a .pth/.pt dict (``model_state_dict`` as released,
    or ``state_dict``, or the bare state dict), never unpickling code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, _ = load_tensors(path)
    else:
        obj = load_torch_weights_only(path)
        if isinstance(obj, dict) and "model_state_dict" in obj:
            state = obj["model_state_dict"]
        elif isinstance(obj, dict) and "state_dict" in obj:
            state = obj["state_dict"]
        else:
            state = obj
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{path} holds no state dict (expected a dict with 'model_state_dict', "
                                  f"as MaskGIT_ImageNet_256.pth, or a dict of tensors)")
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def build_teacher(path: str | Path | None = None, **architecture) -> MaskGitTeacher:
    """A teacher of the given size; weights from ``path`` (strict: every key and shape must match)."""
    teacher = MaskGitTeacher(**architecture)
    if path is not None:
        load_state_dict_strict(teacher, read_state_dict(path), str(path))
    return teacher.eval()


def save_teacher(teacher: MaskGitTeacher, path: str | Path, **metadata) -> None:
    """Safetensors with the release's key names (the file ``build_teacher(path=...)`` reads)."""
    save_tensors(path, teacher.state_dict(), metadata)

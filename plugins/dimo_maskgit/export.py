"""`dimo export` for MaskGit: the student as valeoai/Maskgit-pytorch v1.0 writes its checkpoints.

``current.pth`` is a ``torch.save`` dict with ``model_state_dict`` (the v1.0 MaskTransformer's key
names, which dimo's teacher keeps), ``iter`` and ``global_epoch`` (v1.0's ``get_network`` reads all
three when resuming). v1.0 reads it with ``--resume --vit-folder FOLDER/`` (it appends
``current.pth`` to a folder); dimo reads it back with ``teacher.path=FOLDER/current.pth``.
Only tensors and integers are pickled, so ``torch.load(..., weights_only=True)`` opens it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from dimo_core.errors import CheckpointError

CHECKPOINT = "current.pth"


def save_v1_checkpoint(model: nn.Module, path: Path, step: int = 0) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"model_state_dict": state, "iter": int(step), "global_epoch": 0}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class MaskGitV1Exporter:
    def __call__(self, student: nn.Module, folder: Path) -> list[Path]:
        path = Path(folder) / CHECKPOINT
        save_v1_checkpoint(student, path)
        return [path]

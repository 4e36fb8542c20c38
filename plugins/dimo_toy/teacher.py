"""The toy's teacher: the core's public small MDM (class token appended, as MaskGit), from a file."""
from __future__ import annotations

from pathlib import Path

from dimo_core.checkpoint import load_state_dict_strict, load_tensors
from dimo_core.mdm import SmallMDM


def build_teacher(path: str | Path | None = None, **architecture) -> SmallMDM:
    """A SmallMDM of the given sizes; ``path``: its weights (teacher.safetensors), None = random init."""
    model = SmallMDM(**architecture)
    if path:
        tensors, _ = load_tensors(path)
        load_state_dict_strict(model, tensors, path)
    return model

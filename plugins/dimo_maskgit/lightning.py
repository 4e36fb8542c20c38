"""Reading ``state_dict`` from a PyTorch Lightning checkpoint without unpickling foreign code.

A Lightning ``.ckpt`` also stores trainer state: callback states keyed by callback class, hyper-
parameters as OmegaConf objects, numpy scalars. ``torch.load(weights_only=True)`` refuses those
globals. We first try it plainly; if it refuses, we list the globals the file names and let each
resolve to an inert placeholder class of ours (it accepts any arguments and state and runs nothing),
then load again with weights_only=True. The tensors of ``state_dict`` never depend on those globals.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.checkpoint import load_torch_weights_only
from dimo_core.errors import CheckpointError


class InertGlobal:
    """Stands in for a class a checkpoint names; keeps what it is given, executes nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # a global used as a function (e.g. numpy's scalar)
        return InertGlobal(*args, **kwargs)


def _placeholder(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name or qualified_name, (InertGlobal,), {"__module__": module or "unknown"})


def load_with_inert_globals(path: str | Path):
    """``torch.load(weights_only=True)``, foreign globals replaced by inert placeholders."""
    path = Path(path)
    try:
        return load_torch_weights_only(path)
    except CheckpointError as first_error:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # legacy (non-zip) format or unreadable: the first error says more
            raise first_error from None
        placeholders = [(_placeholder(name), name) for name in names]
        try:
            with torch.serialization.safe_globals(placeholders):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:
            raise first_error from None


def load_lightning_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model weights (``state_dict``) of a Lightning checkpoint."""
    ckpt = load_with_inert_globals(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        keys = ", ".join(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a Lightning checkpoint with a 'state_dict' of tensors "
                              f"(it holds: {keys})")
    return state

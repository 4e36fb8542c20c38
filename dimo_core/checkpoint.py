"""Weights as safetensors, state as JSON, every file written atomically (temp file + rename)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError


def _atomic_write(path: str | Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror}; choose a writable out_dir") from e
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror}; the previous file is intact") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_json(path: str | Path, obj: Any) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
    _atomic_write(path, write)


def load_json(path: str | Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is truncated or not a dimo file") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Save tensors as safetensors; ``metadata`` values are stored as JSON strings."""
    seen, out = set(), {}
    for k, v in tensors.items():  # tied weights share memory, which safetensors refuses: copy repeats
        v = v.detach().contiguous().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), v.numel())
        out[k] = v.clone() if v.numel() and key in seen else v
        seen.add(key)
    tensors = out
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a safetensors file and its JSON metadata, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint {path}; check the path (or train one with `dimo train-teacher`)")
    try:
        tensors = load_file(str(path), device=str(device))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it is truncated or of another format") from None
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return tensors, meta


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                           required: set[str] | None = None) -> None:
    """Load with strict key and shape checks; the error names missing, unexpected and misshapen keys.
    ``required``: the keys the state must hold (default: all); the module keeps its other tensors."""
    own = module.state_dict()
    missing = sorted((set(own) if required is None else set(required)) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshapen:
        def show(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"wrong shapes: {show(misshapen)}" if misshapen else ""]
        raise CheckpointError(f"{source} does not match the model ({'; '.join(p for p in parts if p)}); "
                              f"check the architecture options against the checkpoint")
    module.load_state_dict(state, strict=required is None)


def load_torch_weights_only(path: str | Path) -> Any:
    """``torch.load`` for foreign checkpoints (.pth/.ckpt), never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} could not be loaded with weights_only=True ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); convert it to safetensors") from None


def optimizer_state(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], list]:
    """An optimizer's state as named tensors (for safetensors) and its param groups (for JSON)."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{idx}.{key}": (v if torch.is_tensor(v) else torch.tensor(v))
               for idx, st in sd["state"].items() for key, v in st.items()}
    # a learning rate held as a device tensor (a CUDA-graphed step) is written as its number
    groups = [{k: (v.item() if torch.is_tensor(v) else v) for k, v in group.items()} for group in sd["param_groups"]]
    return tensors, groups


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list,
                          shard_like=None) -> None:
    """``shard_like(param, full)`` cuts full state tensors the way their parameter is sharded (FSDP)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = shard_like(params[int(idx)], v) if shard_like else v
    opt.load_state_dict({"state": state, "param_groups": groups})

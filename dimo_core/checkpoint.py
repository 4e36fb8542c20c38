"""Weights as safetensors, state as JSON, every file written atomically (temp file + rename).

Every safetensors file dimo writes is sealed: its header's metadata holds the SHA-256 of the whole file
(computed with that field zeroed), checked at every load, so a damaged file is refused by name
instead of loading silently."""
from __future__ import annotations

import hashlib
import json
import os
import re
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


DIGEST_KEY = "dimo.sha256"
_UNSEALED = "0" * 64
_DIGEST_FIELD = re.compile(rb'"dimo\.sha256"\s*:\s*"([0-9a-f]{64})"')
_CHUNK = 1 << 24


def _header(f) -> tuple[bytes, bytes]:
    """(the 8-byte length, the JSON header) of an open safetensors file."""
    size = f.read(8)
    if len(size) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(size, "little")
    if n > 100_000_000:
        raise ValueError(f"header length {n} is implausible")
    return size, f.read(n)


def _digest(f, size: bytes, header: bytes) -> str:
    """SHA-256 of the file with its digest field zeroed; ``f`` is positioned after the header."""
    h = hashlib.sha256(size)
    h.update(_DIGEST_FIELD.sub(lambda m: m.group(0).replace(m.group(1), _UNSEALED.encode()), header, count=1))
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _seal(path: str) -> None:
    """Write the file's SHA-256 into the placeholder of its header (same length: nothing moves)."""
    with open(path, "r+b") as f:
        size, header = _header(f)
        field = _DIGEST_FIELD.search(header)
        digest = _digest(f, size, header)
        f.seek(8 + field.start(1))
        f.write(digest.encode())


def verify_tensors(path: str | Path) -> None:
    """Refuse a sealed safetensors file whose bytes changed since dimo wrote it (unsealed ones pass)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size, header = _header(f)
            field = _DIGEST_FIELD.search(header)
            if field is None:
                return  # not written by dimo (or by a dimo before the seal): nothing to compare with
            recorded, actual = field.group(1).decode(), _digest(f, size, header)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it is truncated or of another "
                              f"format") from None
    if recorded != actual:
        raise CheckpointError(f"{path} is damaged: its SHA-256 ({actual[:12]}...) differs from the one recorded when "
                              f"dimo wrote it ({recorded[:12]}...), so its bytes changed on disk")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Save tensors as safetensors, sealed with their SHA-256; ``metadata`` values are stored as JSON strings."""
    seen, out = set(), {}
    for k, v in tensors.items():  # tied weights share memory, which safetensors refuses: copy repeats
        v = v.detach().contiguous().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), v.numel())
        out[k] = v.clone() if v.numel() and key in seen else v
        seen.add(key)
    tensors = out
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()} | {DIGEST_KEY: _UNSEALED}

    def write(tmp):
        save_file(tensors, tmp, metadata=meta)
        _seal(tmp)
    _atomic_write(path, write)


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a safetensors file and its JSON metadata, with errors that name the file; a file dimo
    sealed is checked against its SHA-256 first."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint {path}; check the path (or train one with `dimo train-teacher`)")
    verify_tensors(path)
    try:
        tensors = load_file(str(path), device=str(device))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it is truncated or of another format") from None
    meta = {}
    raw.pop(DIGEST_KEY, None)
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

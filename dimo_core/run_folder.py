"""The run folder: what a run writes into out_dir, and how it is written (atomic checkpoints, the log)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .checkpoint import load_json, load_tensors, save_json, save_tensors
from .config import to_yaml
from .context import Context
from .errors import CheckpointError, ConfigError

STUDENT_FILE = "student.safetensors"
TEACHER_FILE = "teacher.safetensors"


class Checkpoints:
    """step_XXXXXXXX/ folders written whole under a temporary name, then renamed; ``latest.json``
    (replaced atomically) names the newest complete one, so a killed run never reads a partial one."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def save(self, step: int, tensors: dict, meta: dict) -> Path:
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".step_{step:08d}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            save_tensors(tmp / "state.safetensors", tensors)
            save_json(tmp / "state.json", meta)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            save_json(self.root / "latest.json", {"step": step, "dir": final.name})
        except (OSError, CheckpointError) as e:
            shutil.rmtree(tmp, ignore_errors=True)  # no partial folder left behind (disk full, read-only)
            cause = e.__cause__ if isinstance(e, CheckpointError) and e.__cause__ else e
            problem = getattr(cause, "strerror", None) or str(cause)
            raise CheckpointError(f"could not write the checkpoint of step {step} in {self.root}: {problem}; "
                                  f"{self._intact()}") from None
        for old in sorted(p for p in self.root.glob("step_*") if p != final)[:-self.keep + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _intact(self) -> str:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return "no earlier checkpoint exists"
        return f"the previous checkpoint ({self.root / load_json(pointer)['dir']}) is intact"

    def latest(self) -> tuple[dict, dict, Path] | None:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        named = load_json(pointer)
        if not isinstance(named, dict) or not isinstance(named.get("dir"), str):
            raise CheckpointError(f"{pointer} does not name a checkpoint folder (expected {{\"step\": N, \"dir\": "
                                  f"\"step_...\"}}); delete it to start over")
        folder = self.root / named["dir"]
        tensors, _ = load_tensors(folder / "state.safetensors")
        meta = load_json(folder / "state.json")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{folder / 'state.json'} is not a checkpoint's state (a JSON object)")
        return tensors, meta, folder


class JsonLog:
    """Append-only JSONL log; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        lines = path.read_text().splitlines() if path.exists() and resume_step > 0 else []
        kept = [l for l in lines if l.strip() and json.loads(l).get("step", 0) <= resume_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(l + "\n" for l in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def prepare_out_dir(ctx: Context, name: str) -> Path:
    out = ctx.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.config.yaml").write_text(to_yaml(ctx.config))
    except OSError as e:
        raise ConfigError(f"cannot write to out_dir={out}: {e.strerror}; choose a writable out_dir=PATH") from None
    return out


def one_process(command: str) -> None:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(f"`dimo {command}` runs in one process; launch it without torchrun "
                          f"(only `dimo run` is distributed)")

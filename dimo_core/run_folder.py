"""The run folder: what a run writes into out_dir, and how it is written (atomic checkpoints, the log),
one process at a time (an exclusive lock), and what may resume from what (the run's fingerprint)."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .checkpoint import load_json, load_tensors, save_json, save_tensors, verify_tensors
from .config import RunConfig, to_yaml
from .context import Context
from .errors import CheckpointError, ConfigError

STUDENT_FILE = "student.safetensors"
TEACHER_FILE = "teacher.safetensors"
LOCK_FILE = "dimo.lock"
STEP_FOLDER = re.compile(r"step_\d{8}")


class Checkpoints:
    """step_XXXXXXXX/ folders written whole under a temporary name, then renamed; ``latest.json``
    (replaced atomically) names the newest complete one, so a killed run never reads a partial one."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def save(self, step: int, tensors: dict, meta: dict, alongside=None) -> Path:
        """``alongside()``: files of this step outside the folder (the student), written before the
        folder is committed, so a run killed in between resumes from the earlier step and writes
        them again instead of leaving them a step behind the latest checkpoint."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".step_{step:08d}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            save_tensors(tmp / "state.safetensors", tensors)
            save_json(tmp / "state.json", meta)
            if alongside is not None:
                alongside()
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
        folder = self.latest_folder()
        return f"the previous checkpoint ({folder}) is intact" if folder else "no earlier checkpoint exists"

    def latest_folder(self) -> Path | None:
        """The folder ``latest.json`` names: only a step_NNNNNNNN folder inside this one. A step folder
        exists only complete (renamed whole), so when the named one was deleted the newest one serves."""
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        named = load_json(pointer)
        if not isinstance(named, dict) or not isinstance(named.get("dir"), str) or \
                not STEP_FOLDER.fullmatch(named["dir"]):
            raise CheckpointError(f"{pointer} does not name a checkpoint folder of {self.root} (expected "
                                  f"{{\"step\": N, \"dir\": \"step_NNNNNNNN\"}}, got {json.dumps(named)[:80]}); "
                                  f"delete it and rerun to resume from the newest step folder")
        folder = self.root / named["dir"]
        if not folder.is_dir():
            folders = self.step_folders()
            return folders[-1] if folders else None
        return folder

    def step_folders(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step_*") if p.is_dir() and STEP_FOLDER.fullmatch(p.name))

    def read_meta(self, folder: Path) -> dict:
        meta = load_json(folder / "state.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
            raise CheckpointError(f"{folder / 'state.json'} is not a checkpoint's state (a JSON object with a step)")
        return meta

    def load(self, folder: Path) -> tuple[dict, dict]:
        """The tensors and state of ``folder``; when they are damaged, the error names the newest intact
        checkpoint and how to resume from it."""
        try:
            tensors, _ = load_tensors(folder / "state.safetensors")
            return tensors, self.read_meta(folder)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {self._fallback(folder)}") from None

    def _fallback(self, damaged: Path) -> str:
        for folder in reversed(self.step_folders()):
            if folder == damaged:
                continue
            try:
                verify_tensors(folder / "state.safetensors")
                step = self.read_meta(folder)["step"]
            except CheckpointError:
                continue
            return (f"the newest intact checkpoint is {folder} (step {step}): delete {damaged} and rerun the same "
                    f"command to resume from it")
        return "no intact checkpoint remains: resume=false moves this run aside and starts over"

    def latest(self) -> tuple[dict, dict, Path] | None:
        folder = self.latest_folder()
        if folder is None:
            return None
        tensors, meta = self.load(folder)
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


# ---- one process per run folder -----------------------------------------------------------------------
_HELD: dict[Path, int] = {}  # folders this process holds: `dimo run` ending with `dimo eval` locks once


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process (it has not written its name yet)"
    text = f"PID {holder['pid']} on {holder.get('host', '?')} ({holder.get('command', '?')}, since {holder.get('since', '?')})"
    if holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"])):
        text += ("; that process has ended, but a process it started still holds the lock (find it with "
                 "`fuser` on the lock file)")
    return text


@contextmanager
def run_folder_lock(out: Path, command: str):
    """Hold ``out`` for the life of the block: an exclusive ``flock`` on out/dimo.lock, which the kernel
    releases however the process ends (kill -9 included), so a lock is never left behind. Where the
    file system has no flock (some network mounts), the PID written in the file decides: a lock whose
    process is not running on this host is stale and taken over."""
    key = Path(os.path.abspath(out))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = out / LOCK_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot write to out_dir={out}: {e.strerror}; choose a writable out_dir=PATH") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"out_dir={out} is in use by {_describe(_holder(path))}; wait for it to end, or "
                              f"choose another out_dir=PATH") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            holder = _holder(path)  # no flock here: trust the PID unless its process is gone
            if holder.get("pid") and (holder.get("host") != socket.gethostname() or _alive(int(holder["pid"]))):
                raise ConfigError(f"out_dir={out} is in use by {_describe(holder)}; wait for it to end, or choose "
                                  f"another out_dir=PATH (this file system has no flock: if that process is "
                                  f"gone, delete {path})") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)  # the file stays (deleting it would let two processes lock two files)
    finally:
        os.close(fd)  # releases the flock


def command_line() -> str:
    return " ".join(["dimo", *sys.argv[1:]])[:300] if Path(sys.argv[0]).name in ("dimo", "__main__.py") else \
        " ".join(sys.argv)[:300]


# ---- SIGINT and SIGTERM -----------------------------------------------------------------------------------
class StopSignals:
    """While training: the first SIGINT or SIGTERM (Ctrl-C; SLURM and Kubernetes stop jobs with SIGTERM)
    asks the loop to stop after the current step and write a checkpoint; a second one exits at once.
    A repeat within a second is the same request (torchrun forwards the Ctrl-C its workers also got)."""
    REPEAT_S = 1.0

    def __init__(self):
        self.received: int | None = None
        self._at = 0.0
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received, self._at = signum, time.monotonic()
            os.write(2, f"dimo: {name}: finishing the current step, then writing a checkpoint (send it again to "
                        f"stop at once)\n".encode())
        elif time.monotonic() - self._at > self.REPEAT_S:
            os.write(2, f"dimo: second {name}: stopped at once; the last checkpoint written is kept\n".encode())
            os._exit(128 + signum)


class StopAgreement:
    """Every process stops at the same step. With one process the signal counts at once. Under torchrun
    the ranks' signals are combined by an all-reduce on a CPU (gloo) group started at one step and read at
    the next, so no step waits for the GPU and every rank sees the same value: the stop lags one step."""

    def __init__(self, world: int):
        import torch.distributed as dist
        self.dist = dist
        self.group = dist.new_group(backend="gloo") if world > 1 else None
        self.pending = None

    def signal(self, local: int | None) -> int:
        """The signal number to stop for (0: continue); the same on every rank."""
        if self.group is None:
            return local or 0
        import torch
        agreed = 0
        if self.pending is not None:
            work, value = self.pending
            work.wait()
            agreed = int(value.item())
        value = torch.tensor([local or 0], dtype=torch.int64)
        self.pending = (self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX, group=self.group, async_op=True), value)
        return agreed

    def finish(self) -> None:
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None


def interrupted(signum: int, step: int, folder: Path | None) -> "Interrupted":
    from .errors import Interrupted
    written = f"checkpoint {folder.name} written" if folder else "no checkpoint written"
    return Interrupted(f"interrupted at step {step} ({signal.Signals(signum).name}); {written}; rerun the same "
                       f"command to resume", 128 + signum)


# ---- what may resume from what -------------------------------------------------------------------------
NOT_TRAINING = {"log_every", "ckpt_every", "keep_checkpoints", "steps"}


def fingerprint(config: RunConfig, section: str) -> dict[str, Any]:
    """The resolved keys that change what training computes, flattened (``distill.lr_generator``): the
    seed, dtype, teacher, conditions, dataset and the ``section`` (distill | train_teacher) without its
    intervals. ``steps`` counts only when a learning-rate decay ends at the last step."""
    data = config.model_dump(mode="json")
    own = data[section]
    keys = {"seed": data["seed"], "dtype": data["dtype"], "teacher": data["teacher"],
            "conditions": data["conditions"], section: {k: v for k, v in own.items() if k not in NOT_TRAINING}}
    if section == "train_teacher":
        keys["dataset"] = data["dataset"]
    if own["min_lr_ratio"] != 1.0:
        keys[section]["steps"] = own["steps"]
    flat: dict[str, Any] = {}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value
    walk("", keys)
    return flat


def fingerprint_hash(keys: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def changed_keys(recorded: dict | None, now: dict) -> dict[str, list]:
    """key -> [value in the checkpoint, value now], for every key that differs."""
    if not isinstance(recorded, dict):
        return {}
    missing = object()
    return {k: [recorded.get(k), now.get(k)] for k in sorted(set(recorded) | set(now))
            if recorded.get(k, missing) != now.get(k, missing)}


def resume_point(checkpoints: Checkpoints, resume, keys: dict) -> tuple[Path | None, dict | None, dict]:
    """(the checkpoint folder to resume from, its state, the keys changed since) or (None, None, {}).
    A checkpoint written with other training keys is refused unless ``resume=force``."""
    if resume is False:
        return None, None, {}
    folder = checkpoints.latest_folder()
    if folder is None:
        return None, None, {}
    try:
        meta = checkpoints.read_meta(folder)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {checkpoints._fallback(folder)}") from None
    changed = changed_keys(meta.get("fingerprint"), keys)
    if changed and resume != "force":
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changed.items())[:8])
        more = f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""
        raise ConfigError(f"{checkpoints.root.parent} holds a run (step {meta['step']}) trained with other settings: "
                          f"{shown}{more}; rerun with the run's values (its run.config.yaml), or resume=force to "
                          f"continue with these (recorded in the log), or resume=false to move it aside and start over")
    return folder, meta, changed


PARTIAL = re.compile(r"\.step_\d{8}\.tmp-\d+|\..+\.tmp")  # Checkpoints.save's and _atomic_write's temporaries


def remove_partial_files(*folders: Path) -> None:
    """Temporaries a killed process left (kill -9 runs no cleanup); only called under the folder's lock,
    so none of them belongs to a live writer."""
    for folder in folders:
        if folder.is_dir():
            for p in folder.iterdir():
                if PARTIAL.fullmatch(p.name):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def move_aside(out: Path, names: tuple[str, ...]) -> Path | None:
    """``resume=false``: move a previous run's files into out/previous-<UTC time>/; never delete them."""
    present = [out / n for n in names if (out / n).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest, i = out / f"previous-{stamp}", 1
    while dest.exists():
        i += 1
        dest = out / f"previous-{stamp}-{i}"
    try:
        dest.mkdir()
        for p in present:
            os.replace(p, dest / p.name)
    except OSError as e:
        raise ConfigError(f"resume=false: could not move the previous run in {out} aside to {dest}: {e.strerror}; "
                          f"move or delete it yourself, or choose another out_dir=PATH") from None
    return dest


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

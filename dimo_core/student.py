"""The student file: written at every checkpoint of `dimo run`, loaded by `dimo eval`, `dimo sample`."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint import load_state_dict_strict, load_tensors, save_tensors
from .context import Context
from .errors import CheckpointError
from .run_folder import STUDENT_FILE

if TYPE_CHECKING:
    from .engine import DiMOEngine


def teacher_spec(ctx: Context) -> dict:
    return ctx.config.teacher.spec()


def save_student(path: Path, weights: dict, engine: "DiMOEngine", ctx: Context, fingerprint: str | None = None) -> None:
    """``fingerprint``: the hash of the run's training keys (the checkpoints hold the keys themselves)."""
    save_tensors(path, weights,
                 {"teacher": teacher_spec(ctx), "step": engine.step, "ema": bool(engine.ema), "partial": engine.partial,
                  "init": ctx.config.distill.init.spec(), "sigma": ctx.config.distill.sigma,
                  "student_steps": ctx.config.distill.student_steps, "fingerprint": fingerprint})


def load_student(ctx: Context, path: str | Path | None = None) -> torch.nn.Module:
    path = Path(path or ctx.out_dir / STUDENT_FILE)
    if not path.exists():
        raise CheckpointError(f"no student at {path}; run `dimo run plugins=...` with out_dir={ctx.out_dir} first, "
                              f"or name the student file: student=PATH (or sample.student=PATH, eval.student=PATH, "
                              f"export.student=PATH)")
    tensors, meta = load_tensors(path, ctx.device)
    student = copy.deepcopy(ctx.teacher)
    if meta.get("partial"):  # trainable tensors only: the rest must come from the same teacher
        def architecture(spec):  # the path may differ (a moved folder); the rest must not
            return {k: v for k, v in (spec or {}).items() if k != "path"}
        if architecture(meta.get("teacher")) != architecture(teacher_spec(ctx)):
            raise CheckpointError(f"{path} holds only the tensors its run trained; the others are its teacher's, "
                                  f"{meta.get('teacher')}, but the configured teacher is {teacher_spec(ctx)}; "
                                  f"set teacher.* to the run's teacher (its run.config.yaml has them)")
        load_state_dict_strict(student, tensors, str(path), required=set(tensors))
    else:
        load_state_dict_strict(student, tensors, str(path))
    student.trained_steps = list(meta.get("student_steps", [1]))  # the k it was trained for (distill.student_steps)
    return student.eval().requires_grad_(False)

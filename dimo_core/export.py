"""`dimo export`: the student written in its teacher's own format, for use outside dimo.

Exporters are registered by plug-ins (hook ``register_exporters``) under a format name; the one a
plug-in marks ``default`` for the configured teacher is used when ``export.format`` is not given.
The core registers ``safetensors``: the whole student state dict (no partial files), in the key
layout of the teacher module, which every teacher factory that reads a dimo ``.safetensors`` loads.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .checkpoint import save_tensors
from .context import Context
from .errors import ConfigError
from .run_folder import one_process
from .student import load_student, teacher_spec


def exporter_name(ctx: Context) -> str:
    """``export.format``, else the format a plug-in marks default for this teacher, else safetensors."""
    chosen = ctx.config.export.format
    teacher = ctx.config.teacher.name
    entries = ctx.registry.entries["exporters"]
    if chosen is None:
        defaults = [e.name for e in entries.values() if e.meta.get("default") and teacher in e.meta.get("teachers", ())]
        return defaults[0] if defaults else "safetensors"
    entry = ctx.registry.get("exporters", chosen)  # unknown: names the installed formats
    teachers = entry.meta.get("teachers")
    if teachers and teacher not in teachers:
        fitting = sorted(e.name for e in entries.values() if not e.meta.get("teachers") or teacher in e.meta["teachers"])
        raise ConfigError(f"export.format={chosen} writes students of teacher {', '.join(teachers)}, not "
                          f"{teacher!r}; formats for this teacher: {', '.join(fitting)}")
    return chosen


def export(ctx: Context) -> list[Path]:
    cfg = ctx.config.export
    one_process("export")
    name = exporter_name(ctx)
    exporter = ctx.registry.build("exporters", {"name": name}, ctx, "export.format")
    student = load_student(ctx, cfg.student)
    folder = Path(cfg.path) if cfg.path else ctx.out_dir / "export"
    return [Path(p) for p in exporter(student, folder)]


class SafetensorsExporter:
    """The full student state dict as ``student.safetensors`` with the teacher spec as metadata."""

    def __init__(self, ctx: Context):
        self.spec = teacher_spec(ctx)

    def __call__(self, student: nn.Module, folder: Path) -> list[Path]:
        path = Path(folder) / "student.safetensors"
        save_tensors(path, student.state_dict(), {"teacher": self.spec})
        return [path]

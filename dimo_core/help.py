"""`dimo COMMAND --help`: the command's configuration sections and keys, with defaults, from the schema."""
from __future__ import annotations

import inspect
import re

from pydantic import BaseModel

from .config import COMPONENT_SECTIONS, RunConfig

# The sections each command reads besides the run-wide keys and the components.
COMMAND_SECTIONS = {
    "run": ["distill", "log", "distributed", "performance"],
    "train-teacher": ["train_teacher", "distributed", "performance"],
    "sample": ["sample"],
    "eval": ["eval"],
    "export": ["export"],
    "config": ["distill", "log", "train_teacher", "sample", "eval", "export", "distributed", "performance"],
}
COMMENT = re.compile(r"^\s+(\w+):[^#]*#\s*(.*)$")


def key_comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``# comment`` after each field in the class source: the key's meaning."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for line in source.splitlines() if (m := COMMENT.match(line))}


def section_lines(model: type[BaseModel], prefix: str) -> list[str]:
    comments = key_comments(model)
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.__name__ != "Component":
            continue  # a section of its own
        if isinstance(field.default, BaseModel):  # a component: name=... plus its default options
            text = "  " + " ".join(f"{prefix}{name}.{k}={v!r}" for k, v in field.default.model_dump().items())
        else:
            text = f"  {prefix}{name}={field.default!r}"
        if comments.get(name):
            text = f"{text:44s} {comments[name]}"
        lines.append(text)
    return lines


def command_help(command: str, description: str) -> str:
    lines = [f"usage: dimo {command} [key=value ...] [--no-progress]", "", description, ""]
    if command == "plugins":
        return "\n".join(lines + ["Takes no keys."])
    lines += ["run-wide keys (default shown):"] + section_lines(RunConfig, "")
    components = ", ".join(COMPONENT_SECTIONS)
    lines += ["", f"components ({components}):",
              "  name=... plus the options of the registered factory; `dimo plugins` lists what is installed,",
              "  `dimo config show plugins=NAME` the merged values of a plugin's preset."]
    for section in COMMAND_SECTIONS.get(command, []):
        model = RunConfig.model_fields[section].annotation
        lines += ["", f"{section}:"] + section_lines(model, f"{section}.")
    if command in ("sample", "eval", "export"):
        lines += ["", "student=PATH sets sample.student, eval.student and export.student at once."]
    lines += ["", "Every key, its type and meaning: docs/configuration.md"]
    return "\n".join(lines)

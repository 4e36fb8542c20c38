"""YAML presets for plug-ins: ``register(name, load_preset(PRESETS / "name.yaml"))``.

A string value starting with ``./`` or ``../`` is a path relative to the preset file and becomes
absolute, so a preset can point at files shipped beside it (``teacher.path: ../assets/teacher.safetensors``)
wherever the package is installed. Any other string is kept as written: a name, an absolute path, a
path the user's working directory resolves, an interpolation (``${teacher.path}``) or ``???``
(``REQUIRED``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .errors import ConfigError

RELATIVE_PREFIXES = ("./", "../")


def load_preset(path: str | Path) -> dict:
    """The YAML file at ``path`` as a plain dict, with ``./`` and ``../`` paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"preset file not found: {path} (a plug-in package must ship its presets/*.yaml; "
                          f"declare them as package-data)")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} is not a mapping of sections (teacher:, distill:, ...)")
    return resolve_relative_paths(data, path.absolute().parent)


def resolve_relative_paths(value: Any, base: Path) -> Any:
    """``value`` with every string starting with ``./`` or ``../`` replaced by ``base / it`` (normalised)."""
    if isinstance(value, dict):
        return {k: resolve_relative_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_relative_paths(v, base) for v in value]
    if isinstance(value, str) and value.startswith(RELATIVE_PREFIXES):
        return os.path.normpath(base / value)
    return value

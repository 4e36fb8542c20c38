"""`dimo export` for Meissonic: the teacher's folder layout with the student as its ``transformer/``.

``transformer/`` holds config.json + diffusion_pytorch_model.safetensors, as the release writes them
(parameter names unchanged), so the loader that reads the teacher (``teacher.path=FOLDER``, or
Meissonic's own ``Transformer2DModel.from_pretrained(FOLDER, subfolder="transformer")``) reads the
student. The teacher folder's other parts (vqvae/, text_encoder/, tokenizer/, scheduler/,
model_index.json, ...) are linked, not copied: they are the teacher's, unchanged, and for the
released model several GB. A teacher given as one .safetensors file has no other parts to link.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from dimo_core.errors import CheckpointError

from .teacher import CONFIG_FILE, save_transformer_folder, transformer_folder


class MeissonicFolderExporter:
    def __init__(self, teacher_path: str | None):
        self.teacher_path = Path(teacher_path) if teacher_path else None

    def __call__(self, student: nn.Module, folder: Path) -> list[Path]:
        folder = Path(folder)
        written = [save_transformer_folder(student, folder / "transformer")]
        teacher_config = self.teacher_transformer() / CONFIG_FILE if self.teacher_transformer() else None
        if teacher_config is not None and teacher_config.is_file():  # the release's keys kept as written
            shutil.copyfile(teacher_config, folder / "transformer" / CONFIG_FILE)
        for part in self.other_parts():
            target = folder / part.name
            if target.is_symlink() or target.exists():
                if target.is_symlink() and target.resolve() == part.resolve():
                    written.append(target)
                    continue
                raise CheckpointError(f"{target} exists and is not a link to the teacher's {part}; choose an "
                                      f"empty export.path")
            os.symlink(part.resolve(), target, target_is_directory=part.is_dir())
            written.append(target)
        return written

    def teacher_transformer(self) -> Path | None:
        path = self.teacher_path
        return transformer_folder(path) if path is not None and path.is_dir() else None

    def other_parts(self) -> list[Path]:
        """The teacher folder's entries besides transformer/ (none for a transformer-only folder)."""
        path = self.teacher_path
        if path is None or not path.is_dir() or transformer_folder(path) != path / "transformer":
            return []
        return sorted(p for p in path.iterdir() if p.name != "transformer" and not p.name.startswith("."))

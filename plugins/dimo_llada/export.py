"""`dimo export` for text teachers: the student as a Hugging Face folder, or as a peft adapter.

``hf`` (default): config.json + model.safetensors + the tokenizer + the teacher folder's own model
code (``*.py``, for checkpoints loaded with trust_remote_code such as LLaDA), LoRA adapters merged
into the weights, so ``AutoModelForMaskedLM.from_pretrained(folder)`` (``AutoModel`` for LLaDA, with
``trust_remote_code=True``) loads the student alone. The bundled architecture needs
``import dimo_llada.modeling`` first (it registers itself with the Auto classes).

``adapter``: only the LoRA adapters (adapter_config.json + adapter_model.safetensors), for
``PeftModel.from_pretrained(teacher_model, folder)``; the run must have used ``teacher.lora_rank``.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

from torch import nn

from dimo_core.errors import ConfigError

from .tokenizer import save_tokenizer


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def remote_code_files(teacher_path: str | None) -> list[Path]:
    """The model code a teacher folder ships (LLaDA's modeling_llada.py, configuration_llada.py)."""
    if not teacher_path or not Path(teacher_path).is_dir():
        return []
    return sorted(p for p in Path(teacher_path).glob("*.py") if p.name != "__init__.py")


class HFFolderExporter:
    def __init__(self, tokenizer, teacher_path: str | None):
        self.tokenizer, self.teacher_path = tokenizer, teacher_path

    def __call__(self, student: nn.Module, folder: Path) -> list[Path]:
        folder = Path(folder)
        model = student.model
        if is_peft(model):  # W + BA written as one weight: the folder needs neither peft nor the teacher
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(str(folder))
        save_tokenizer(getattr(self.tokenizer, "hf", self.tokenizer), folder)
        for code in remote_code_files(self.teacher_path):
            if not (folder / code.name).exists():
                shutil.copy2(code, folder / code.name)
        return sorted(p for p in folder.iterdir() if p.is_file())


class AdapterExporter:
    def __call__(self, student: nn.Module, folder: Path) -> list[Path]:
        if not is_peft(student.model):
            raise ConfigError("export.format=adapter writes LoRA adapters, but this student has none (the run had "
                              "teacher.lora_rank=0); use export.format=hf for the whole model")
        folder = Path(folder)
        student.model.save_pretrained(str(folder))
        return sorted(p for p in folder.iterdir() if p.is_file())

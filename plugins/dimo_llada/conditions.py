"""Prompts for distillation and evaluation.

Condition batches are ``{"input_ids": (n, P), "attention_mask": (n, P)}`` with a FIXED width P, so
batches drawn at different times concatenate; shorter prompts are left-padded (mask 0). The null
condition (for classifier-free guidance) replaces every real prompt token by the mask id, as LLaDA
does; padding stays padding.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from dimo_core.errors import ConfigError

from .corpus import canonical_split, load_records
from .data import BuiltinText, draw_indices, full_prompt, on_device


class PromptConditions:
    """``prompts`` conditions: prompts from a local file (one record each), or the first P tokens of
    windows of the bundled text (the prompts the bundled teacher was trained with)."""

    def __init__(self, tokenizer, mask_id: int, prompt_len: int = 16, path: str | None = None,
                 eval_path: str | None = None, column: str = "text", eval_fraction: float = 0.1,
                 text: BuiltinText | None = None, device=None):
        self.tokenizer, self.mask_id, self.prompt_len, self.device = tokenizer, mask_id, prompt_len, device
        self.text = text
        self.splits: dict[str, Tensor] = {}
        self._copies: dict = {}   # the split tables on the device that draws from them
        if path is not None:
            self._load_files(path, eval_path, column, eval_fraction)

    def _load_files(self, path: str, eval_path: str | None, column: str, eval_fraction: float) -> None:
        records = load_records(path, column)
        if eval_path is not None:
            train, held_out = records, load_records(eval_path, column)
        elif eval_fraction == 0:
            train = held_out = records   # one small prompt file serves both
        else:
            # stable per-record split: a prompt never moves between train and eval
            cut = int(round(eval_fraction * 100))
            train = [r for r in records if hash_bucket(r) >= cut]
            held_out = [r for r in records if hash_bucket(r) < cut]
        for name, rows in (("train", train), ("eval", held_out)):
            if not rows:
                raise ConfigError(f"prompt file {path} leaves no prompts for split {name!r}; give eval_path, or "
                                  f"eval_fraction=0 to use every prompt in both splits")
            self.splits[name] = self.pad_left([self.prompt_ids(r) for r in rows])

    def prompt_ids(self, text: str) -> list[int]:
        """[BOS] + text, keeping the LAST P tokens: the end of a prompt is what the response continues."""
        bos = [self.tokenizer.bos_id] if getattr(self.tokenizer, "bos_id", None) is not None else []
        return (bos + self.tokenizer.ids(text))[-self.prompt_len:]

    def pad_left(self, rows: list[list[int]]) -> dict[str, Tensor]:
        ids = torch.full((len(rows), self.prompt_len), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            if row:
                ids[i, -len(row):] = torch.tensor(row)
                mask[i, -len(row):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def from_text(self, texts: list[str]) -> dict[str, Tensor]:
        """Prompts typed by the user (``dimo sample prompt="..."``)."""
        return {k: v.to(self.device) if self.device else v
                for k, v in self.pad_left([self.prompt_ids(t) for t in texts]).items()}

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> dict[str, Tensor]:
        device = self.device or generator.device
        if not self.splits:
            return full_prompt(self.text.stream(split).windows(n, self.prompt_len, generator).to(device))
        split = canonical_split(split)
        name = "train" if split == "train" else "eval"
        table = self.splits[name]
        rows = draw_indices(len(table["input_ids"]), n, generator)
        return {k: on_device(self._copies, (name, k), v, rows.device)[rows].to(device) for k, v in table.items()}

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        ids = cond["input_ids"].masked_fill(cond["attention_mask"].bool(), self.mask_id)
        return {"input_ids": ids, "attention_mask": cond["attention_mask"]}


def hash_bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(("prompt:" + text).encode("utf-8")).digest()[:8], "big") % 100

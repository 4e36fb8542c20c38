"""Prompt/response pairs for teacher training, and prompts for distillation and evaluation.

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

from .corpus import builtin_documents, canonical_split, load_records, split_of


def _device(ctx, generator: torch.Generator) -> torch.device:
    return getattr(ctx, "device", None) or generator.device


def _draw(high: int, n: int, generator: torch.Generator) -> Tensor:
    return torch.randint(high, (n,), generator=generator, device=generator.device).cpu()


class TokenStream:
    """Documents as one id stream, ``[BOS] doc [EOS] [BOS] doc [EOS] ...``, cut into random windows."""

    def __init__(self, documents: list[str], tokenizer):
        if not documents:
            raise ConfigError("no text in this split; give more text or another split")
        bos = [tokenizer.bos_id] if getattr(tokenizer, "bos_id", None) is not None else []
        eos_id = getattr(getattr(tokenizer, "hf", None), "eos_token_id", None)
        eos = [eos_id] if eos_id is not None else []
        encoded = tokenizer.hf(documents, add_special_tokens=False)["input_ids"]
        self.ids = torch.tensor([t for doc in encoded for t in bos + doc + eos], dtype=torch.long)

    def windows(self, n: int, length: int, generator: torch.Generator) -> Tensor:
        if len(self.ids) < length:
            raise ConfigError(f"the text has {len(self.ids)} tokens, fewer than one window of {length}")
        starts = _draw(len(self.ids) - length + 1, n, generator)
        return self.ids[starts[:, None] + torch.arange(length)]


def full_prompt(ids: Tensor) -> dict[str, Tensor]:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class BuiltinText:
    """Token streams of the bundled sources (or of local files), per split, built on first use."""

    def __init__(self, tokenizer, sources: list[str] | None = None, files: list[str] | None = None,
                 column: str = "text"):
        self.tokenizer, self.sources, self.files, self.column = tokenizer, sources or ["fortunes"], files, column
        self._streams: dict[str, TokenStream] = {}

    def documents(self, split: str) -> list[str]:
        if self.files:
            docs = [d for path in self.files for d in load_records(path, self.column)]
            return [d for d in docs if split_of(d) == split]
        return builtin_documents(self.sources, split)

    def stream(self, split: str) -> TokenStream:
        split = canonical_split(split)
        if split not in self._streams:
            self._streams[split] = TokenStream(self.documents(split), self.tokenizer)
        return self._streams[split]


class TextPairs:
    """``text_pairs`` dataset: windows of real text, the first P tokens the prompt, the next L the response."""

    def __init__(self, text: BuiltinText, prompt_len: int = 16, response_len: int = 32, device=None):
        self.text, self.prompt_len, self.response_len, self.device = text, prompt_len, response_len, device

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> tuple[Tensor, dict]:
        window = self.text.stream(split).windows(n, self.prompt_len + self.response_len, generator)
        device = self.device or generator.device
        prompt = full_prompt(window[:, :self.prompt_len].to(device))
        return window[:, self.prompt_len:].to(device), prompt


class PromptConditions:
    """``prompts`` conditions: prompts from a local file (one record each), or the first P tokens of
    windows of the bundled text (the prompts the bundled teacher was trained with)."""

    def __init__(self, tokenizer, mask_id: int, prompt_len: int = 16, path: str | None = None,
                 eval_path: str | None = None, column: str = "text", eval_fraction: float = 0.1,
                 text: BuiltinText | None = None, device=None):
        self.tokenizer, self.mask_id, self.prompt_len, self.device = tokenizer, mask_id, prompt_len, device
        self.text = text
        self.splits: dict[str, Tensor] = {}
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
        table = self.splits["train" if split == "train" else "eval"]
        rows = _draw(len(table["input_ids"]), n, generator)
        return {k: v[rows].to(device) for k, v in table.items()}

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        ids = cond["input_ids"].masked_fill(cond["attention_mask"].bool(), self.mask_id)
        return {"input_ids": ids, "attention_mask": cond["attention_mask"]}


def hash_bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(("prompt:" + text).encode("utf-8")).digest()[:8], "big") % 100

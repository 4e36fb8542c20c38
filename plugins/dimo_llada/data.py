"""Prompt/response pairs for teacher training, cut from the bundled text or local files."""
from __future__ import annotations

import torch
from torch import Tensor

from dimo_core.errors import ConfigError

from .corpus import builtin_documents, canonical_split, load_records, split_of


def draw_indices(high: int, n: int, generator: torch.Generator) -> Tensor:
    """On the generator's device: a training step reads nothing back to the host."""
    return torch.randint(high, (n,), generator=generator, device=generator.device)


def on_device(cache: dict, key, tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``, copied there once (a token table read every step)."""
    if tensor.device == device:
        return tensor
    if (key, device) not in cache:
        cache[key, device] = tensor.to(device)
    return cache[key, device]


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
        self._copies: dict = {}

    def windows(self, n: int, length: int, generator: torch.Generator) -> Tensor:
        if len(self.ids) < length:
            raise ConfigError(f"the text has {len(self.ids)} tokens, fewer than one window of {length}")
        starts = draw_indices(len(self.ids) - length + 1, n, generator)
        ids = on_device(self._copies, "ids", self.ids, starts.device)
        return ids[starts[:, None] + torch.arange(length, device=starts.device)]


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


_TEXTS: dict[tuple, BuiltinText] = {}


def shared_text(tokenizer, sources: list[str], files: list[str] | None, column: str) -> BuiltinText:
    """One tokenised corpus per tokenizer and source, shared by the dataset and the conditions."""
    key = (id(tokenizer), tuple(sources), tuple(files or ()), column)
    if key not in _TEXTS:
        _TEXTS[key] = BuiltinText(tokenizer, sources, files, column)
    return _TEXTS[key]


class TextPairs:
    """``text_pairs`` dataset: windows of real text, the first P tokens the prompt, the next L the response."""

    def __init__(self, text: BuiltinText, prompt_len: int = 16, response_len: int = 32, device=None):
        self.text, self.prompt_len, self.response_len, self.device = text, prompt_len, response_len, device

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> tuple[Tensor, dict]:
        window = self.text.stream(split).windows(n, self.prompt_len + self.response_len, generator)
        device = self.device or generator.device
        prompt = full_prompt(window[:, :self.prompt_len].to(device))
        return window[:, self.prompt_len:].to(device), prompt

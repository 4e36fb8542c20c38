"""The toy's tokenizer: symbol i <-> letter i, for reading samples."""
from __future__ import annotations

import torch

SYMBOLS = "abcdefghijklmnopqrstuvwxyz"


class SymbolsTokenizer:
    """Symbol i <-> letter i; the mask id (= vocab_size) lies outside the codes."""
    mask_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[SYMBOLS.index(ch) for ch in t] for t in texts])

    def decode(self, tokens: torch.Tensor) -> list[str]:
        return ["".join(SYMBOLS[i] if i < self.vocab_size else "_" for i in row) for row in tokens.tolist()]

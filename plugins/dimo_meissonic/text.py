"""The frozen text side: CLIP tokenizer + CLIPTextModelWithProjection from a release-layout folder.

Meissonic reads ``hidden_states[-2]`` (the penultimate layer, before the final LayerNorm) as the
joint-attention context and ``text_embeds`` (projected pooled output) as the pooled input; prompts
are padded to a fixed length (77 for the release). This module also builds the small word-level
CLIP tokenizer of the bundled Fashion-MNIST captions.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.errors import CheckpointError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _subfolder(path: Path, name: str) -> Path:
    folder = path / name if (path / name).is_dir() else path
    if not folder.is_dir():
        raise CheckpointError(f"missing folder {path / name} (a Meissonic folder holds transformer/, vqvae/, "
                              f"text_encoder/ and tokenizer/)")
    return folder


def load_text_encoder(path: str | Path, device: torch.device | str = "cpu"):
    """(tokenizer, frozen text encoder in eval mode) from ``path/tokenizer`` and ``path/text_encoder``,
    local files only."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer
    path = Path(path)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(_subfolder(path, "tokenizer")), local_files_only=True)
        encoder = CLIPTextModelWithProjection.from_pretrained(str(_subfolder(path, "text_encoder")),
                                                              local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the CLIP tokenizer/text encoder under {path}: "
                              f"{str(e).splitlines()[0][:300]}") from None
    return tokenizer, encoder.to(device).eval().requires_grad_(False)


class PromptEncoder:
    """Prompts -> {"context": (B, T, D), "pooled": (B, P)} with the frozen CLIP text model."""

    def __init__(self, tokenizer, encoder, max_length: int = 77, batch_size: int = 64):
        self.tokenizer, self.encoder, self.max_length, self.batch_size = tokenizer, encoder, max_length, batch_size
        self.device = next(encoder.parameters()).device

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> dict[str, Tensor]:
        context, pooled = [], []
        for start in range(0, len(prompts), self.batch_size):
            ids = self.tokenizer(list(prompts[start:start + self.batch_size]), padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt").input_ids.to(self.device)
            out = self.encoder(ids, output_hidden_states=True, return_dict=True)
            context.append(out.hidden_states[-2].float())
            pooled.append(out.text_embeds.float())
        return {"context": torch.cat(context), "pooled": torch.cat(pooled)}


def word_level_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary (``</w>`` ends a word) in which each word of ``words`` is built
    by left-to-right merges; ids 0/1 are the start/end tokens. Every intermediate merge result is
    in the vocabulary, so any text made of the words' letters tokenizes without unknown tokens."""
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for word in sorted(set(words)):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        for s in symbols + [ch for ch in word] + [ch + "</w>" for ch in word]:
            add(s)
        merged = symbols[0]
        for s in symbols[1:]:
            rule = (merged, s)
            if rule not in merges:
                merges.append(rule)
            merged += s
            add(merged)
    return vocab, merges


def build_clip_tokenizer(words: list[str], max_length: int):
    """A transformers ``CLIPTokenizer`` over ``words`` (lower case, split as CLIP pre-tokenizes)."""
    from transformers import CLIPTokenizer
    vocab, merges = word_level_bpe(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_clip_text_config(vocab_size: int, max_length: int, projection_dim: int, hidden_size: int = 64,
                          layers: int = 2, heads: int = 2):
    """A CLIP text config at toy size; end-of-text id 1 (the pooled token is the first EOS)."""
    from transformers import CLIPTextConfig
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                          num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                          projection_dim=projection_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                          hidden_act="gelu")

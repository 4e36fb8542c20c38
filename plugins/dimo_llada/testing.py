"""Tiny Hugging Face folders built on the spot, for tests: the same loading path as real checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "The cat sat on the mat and looked at the dog.",
    "A dog ran across the garden after a red ball.",
    "Time flies like an arrow; fruit flies like a banana.",
    "Never put off until tomorrow what you can do the day after tomorrow.",
    "The early bird gets the worm, but the second mouse gets the cheese.",
    "To be or not to be, that is the question.",
]


def tiny_bpe(folder: str | Path, texts: list[str] = SENTENCES, vocab_size: int = 300):
    """A byte-level BPE with [PAD] [BOS] [EOS] [MASK], saved as a Hugging Face tokenizer folder."""
    from .tokenizer import save_tokenizer, train_bpe_tokenizer
    tokenizer = train_bpe_tokenizer(texts, vocab_size)
    save_tokenizer(tokenizer, folder)
    return tokenizer


def tiny_llada_folder(folder: str | Path, seed: int = 0, causal: bool = False, **overrides) -> Path:
    """The bundled architecture (or its causal reference twin) at toy size, with its tokenizer."""
    from .modeling import DimoLladaConfig, DimoLladaForMaskedLM, DimoReferenceLM, DimoReferenceLMConfig
    tokenizer = tiny_bpe(folder)
    torch.manual_seed(seed)
    config_class, model_class = ((DimoReferenceLMConfig, DimoReferenceLM) if causal
                                 else (DimoLladaConfig, DimoLladaForMaskedLM))
    options = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   mask_token_id=None if causal else tokenizer.mask_token_id)
    model_class(config_class(**{**options, **overrides})).save_pretrained(str(folder))
    return Path(folder)


def tiny_bert_folder(folder: str | Path, seed: int = 0) -> Path:
    """A BertForMaskedLM with a WordPiece vocabulary: the mask id is only in the tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer
    words = sorted({w.strip(".,;").lower() for s in SENTENCES for w in s.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizer(vocab=vocab)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertForMaskedLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return Path(folder)

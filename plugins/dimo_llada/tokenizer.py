"""Text tokenizers: a dimo ``Tokenizer`` over any Hugging Face tokenizer folder, and the BPE we train.

``vocab_size`` is the number of logit columns of the model in the same folder (LLaDA-8B predicts
126464 columns while its tokenizer names fewer tokens), so the core's vocabulary check compares
like with like. ``mask_id`` comes from the folder (config.json's ``mask_token_id``, else the
tokenizer's mask token), never from a default.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from dimo_core.errors import CheckpointError

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[MASK]"]


def read_model_config(folder: str | Path) -> dict:
    """config.json of a model folder as a dict ({} when the folder holds only a tokenizer)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def resolve_mask_id(config: dict, tokenizer=None, override: int | None = None, where: str = "") -> int:
    """The mask id: an explicit override, config.json's mask_token_id, or the tokenizer's mask token."""
    if override is not None:
        return int(override)
    if config.get("mask_token_id") is not None:
        return int(config["mask_token_id"])
    if tokenizer is not None and getattr(tokenizer, "mask_token_id", None) is not None:
        return int(tokenizer.mask_token_id)
    raise CheckpointError(
        f"no mask id for {where or 'this checkpoint'}: config.json has no mask_token_id and the tokenizer has no "
        f"mask token; set it explicitly (teacher.mask_id=... and tokenizer.mask_id=..., e.g. 50257 for "
        f"kuleshov-group/mdlm-owt)")


def load_hf_tokenizer(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    from . import modeling  # noqa: F401  lets AutoTokenizer read the bundled folders' config.json
    if not Path(path).is_dir():
        raise CheckpointError(f"tokenizer folder {path} not found; give a local Hugging Face folder "
                              f"(tokenizer.json / tokenizer_config.json)")
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        hint = "" if trust_remote_code else " (if the folder ships its own tokenizer code, set trust_remote_code=true)"
        raise CheckpointError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0][:300]}{hint}") from None


class HFTokenizer:
    """A Hugging Face tokenizer seen through dimo's Tokenizer protocol.

    ``encode(str) -> (T,)``, ``encode(list[str]) -> (n, T_max)`` right-padded with the pad id;
    ``decode((L,)) -> str``, ``decode((n, L)) -> list[str]``. Special tokens other than padding
    are kept in decoded text: a generator that emits [EOS] or [MASK] mid-response should show it.
    """

    def __init__(self, hf_tokenizer, vocab_size: int, mask_id: int):
        self.hf = hf_tokenizer
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else mask_id
        self.bos_id = hf_tokenizer.bos_token_id

    @classmethod
    def from_folder(cls, path: str | Path, trust_remote_code: bool = False, mask_id: int | None = None,
                    vocab_size: int | None = None) -> "HFTokenizer":
        hf = load_hf_tokenizer(path, trust_remote_code)
        config = read_model_config(path)
        # logit columns: the model's embedding rows where the config says so, else the tokenizer's size
        columns = vocab_size or config.get("embedding_size") or config.get("vocab_size") or len(hf)
        return cls(hf, int(columns), resolve_mask_id(config, hf, mask_id, str(path)))

    def ids(self, text: str) -> list[int]:
        """Token ids of plain text, without the special tokens a tokenizer may add (BERT's [CLS]/[SEP])."""
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def encode(self, data: str | list[str]) -> Tensor:
        if isinstance(data, str):
            return torch.tensor(self.ids(data), dtype=torch.long)
        rows = [self.ids(text) for text in data]
        out = torch.full((len(rows), max(map(len, rows), default=0)), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode(self, tokens: Tensor) -> str | list[str]:
        if tokens.dim() == 1:
            ids = [int(t) for t in tokens if int(t) != self.pad_id]
            return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return [self.decode(row) for row in tokens]


def save_tokenizer(hf_tokenizer, folder: str | Path) -> None:
    """save_pretrained, naming the class PreTrainedTokenizerFast (transformers 5 writes its new
    "TokenizersBackend", which transformers 4 cannot load; 5 loads both)."""
    hf_tokenizer.save_pretrained(str(folder))
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE (lossless on any text) with [PAD] [BOS] [EOS] [MASK] as ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   mask_token="[MASK]", clean_up_tokenization_spaces=False)

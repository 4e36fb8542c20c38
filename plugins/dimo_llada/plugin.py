"""Registers the text plugin: Hugging Face teachers and tokenizers, prompts, text pairs, LLaDA's
sampler, text metrics and examples, and the bundled CPU-sized default (preset ``llada``)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import dimo_core
from dimo_core.errors import ConfigError
from dimo_core.presets import load_preset

from .conditions import PromptConditions
from .data import TextPairs, shared_text
from .families import FamilyName
from .memory import enable_activation_checkpointing
from .metrics import BUNDLED_REFERENCE, ReferenceScorer, TextQuality
from .sampler import LLaDASampler
from .teacher import BUNDLED_TEACHER, load_teacher
from .tokenizer import HFTokenizer
from .writer import TextExamples

PRESETS = Path(__file__).parent / "presets"

Dtype = Literal["float32", "bfloat16", "float16"]
def _tokenizer(ctx) -> HFTokenizer:
    tokenizer = getattr(ctx, "tokenizer", None)
    if not hasattr(tokenizer, "hf"):
        raise ConfigError("this component reads text through a Hugging Face tokenizer; set tokenizer.name=hf")
    return tokenizer


@dimo_core.hookimpl
def register_teachers(register):
    def hf_mdm(ctx, path: str | None = None,
               seq_len: int = 32,                        # response tokens L the student generates
               trust_remote_code: bool = False,          # run model code shipped in the folder (LLaDA needs it)
               mask_id: int | None = None,               # only for checkpoints that do not name their mask id
               dtype: Dtype = "float32",                 # weight dtype; bfloat16 for LLaDA-8B (16 GB per copy)
               gradient_checkpointing: bool = False,     # recompute activations in backward (generator, aux)
               lora_rank: int = 0,                       # >0: LoRA adapters on every copy (see memory.py)
               lora_alpha: float | None = None,          # default 2 * rank
               lora_targets: list[str] | None = None,    # nn.Linear names; default: common attention/MLP names
               embedding_module: str | None = None,      # dotted name of the token embedding, if not standard
               family: FamilyName = "auto",              # calling conventions (docs/text-families.md); auto: config.json
               hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4,   # a new bundled model
               intermediate_size: int = 512, max_positions: int = 256):
        architecture = dict(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            intermediate_size=intermediate_size, max_positions=max_positions)
        needs_tokenizer = path is None or str(path).endswith(".safetensors")
        teacher = load_teacher(path, seq_len=seq_len, tokenizer=_tokenizer(ctx) if needs_tokenizer else None,
                               trust_remote_code=trust_remote_code, mask_id=mask_id, dtype=dtype,
                               embedding_module=embedding_module, architecture=architecture, family=family)
        if gradient_checkpointing:
            enable_activation_checkpointing(teacher.model)
        if lora_rank > 0:
            teacher.add_lora(lora_rank, lora_alpha, lora_targets)
        return teacher
    register("hf_mdm", hf_mdm)


@dimo_core.hookimpl
def register_tokenizers(register):
    def hf(ctx, path: str | None = None,                # a Hugging Face folder; None: the teacher's folder
           trust_remote_code: bool | None = None,        # None: as teacher.trust_remote_code for its folder
           mask_id: int | None = None,                   # only for folders that do not name their mask id
           vocab_size: int | None = None):               # logit columns, if config.json does not say
        if path is None:   # the teacher's folder; the bundled one for a teacher .safetensors or none
            teacher_path = getattr(getattr(ctx, "config", None), "teacher", None)
            teacher_path = getattr(teacher_path, "path", None)
            from_teacher = teacher_path is not None and Path(teacher_path).is_dir()
            path = teacher_path if from_teacher else BUNDLED_TEACHER
            if trust_remote_code is None and from_teacher:
                trust_remote_code = bool(getattr(ctx.config.teacher, "trust_remote_code", False))
        return HFTokenizer.from_folder(path, bool(trust_remote_code), mask_id, vocab_size)
    register("hf", hf)


@dimo_core.hookimpl
def register_conditions(register):
    def prompts(ctx, path: str | None = None,           # .txt (a prompt a line), .json/.jsonl, .parquet; None: bundled text
                eval_path: str | None = None,            # held-out prompts; default: a hashed eval_fraction of path
                column: str = "text",                    # the prompt field of JSON/parquet records
                prompt_len: int = 16,                    # P: prompts are left-padded or cut (keeping the end) to P
                eval_fraction: float = 0.1,
                sources: list[str] = ["fortunes"]):      # bundled text when path is None: fortunes, pydoc
        path, eval_path
        tokenizer = _tokenizer(ctx)
        text = None if path else shared_text(tokenizer, sources, None, column)
        return PromptConditions(tokenizer, tokenizer.mask_id, prompt_len, path, eval_path, column, eval_fraction,
                                text, getattr(ctx, "device", None))
    register("prompts", prompts)


@dimo_core.hookimpl
def register_datasets(register):
    def text_pairs(ctx, files: list[str] | None = None,  # local text files (documents); None: bundled sources
                   column: str = "text",
                   sources: list[str] = ["fortunes"],
                   prompt_len: int = 16,                  # P, as conditions.prompt_len
                   response_len: int = 32):               # L, as teacher.seq_len
        return TextPairs(shared_text(_tokenizer(ctx), sources, files, column), prompt_len, response_len,
                         getattr(ctx, "device", None))
    register("text_pairs", text_pairs)


@dimo_core.hookimpl
def register_samplers(register):
    def llada(ctx, block_length: int | None = None,     # semi-autoregressive block; None: one block (the response)
              temperature: float = 1.0,                  # Gumbel noise scale; 0 = greedy (LLaDA's default)
              remasking: Literal["low_confidence", "random"] = "low_confidence"):
        return LLaDASampler(block_length, temperature, remasking)
    register("llada", llada)


@dimo_core.hookimpl
def register_metrics(register):
    def text_quality(ctx, reference: str | None = None,  # causal LM folder; None: the bundled reference model
                     retokenize: bool | None = None,      # None: only when its vocabulary differs from ours
                     trust_remote_code: bool = False,
                     batch_size: int = 64):
        scorer = ReferenceScorer(reference or BUNDLED_REFERENCE, getattr(ctx, "device", "cpu"),
                                 trust_remote_code)
        return TextQuality(_tokenizer(ctx), scorer, retokenize, batch_size)
    register("text_quality", text_quality)


@dimo_core.hookimpl
def register_writers(register):
    def text_examples(ctx, n: int = 8, filename: str = "text_examples.md"):
        return TextExamples(_tokenizer(ctx), n, filename)
    register("text_examples", text_examples)


@dimo_core.hookimpl
def register_exporters(register):
    from .export import AdapterExporter, HFFolderExporter

    def hf(ctx):
        """A Hugging Face folder (weights, tokenizer, the teacher's model code); LoRA merged."""
        return HFFolderExporter(ctx.tokenizer, getattr(ctx.config.teacher, "path", None))
    register("hf", hf, teachers=["hf_mdm"], default=True)
    register("adapter", lambda ctx: AdapterExporter(), teachers=["hf_mdm"])  # peft LoRA adapter folder


@dimo_core.hookimpl
def register_presets(register):
    register("llada", load_preset(PRESETS / "llada.yaml"))
    register("llada_8b", load_preset(PRESETS / "llada_8b.yaml"))

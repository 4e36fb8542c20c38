"""Registers the toy source: teacher, symbols tokenizer, class conditions, data, exact metrics."""
from __future__ import annotations

from pathlib import Path

import dimo_core
from dimo_core.conditions import ClassLabels
from dimo_core.presets import load_preset

from .data import MarkovData
from .metrics import ExactMetrics
from .source import MarkovSource
from .teacher import build_teacher
from .tokenizer import SymbolsTokenizer
from .writer import TextWriter

PRESETS = Path(__file__).parent / "presets"


@dimo_core.hookimpl
def register_teachers(register):
    def toy_mdm(ctx, path: str | None = None, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4,
                dim: int = 96, depth: int = 3, heads: int = 4):
        return build_teacher(path, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes, dim=dim,
                             depth=depth, heads=heads)
    register("toy_mdm", toy_mdm)


@dimo_core.hookimpl
def register_tokenizers(register):
    register("toy_symbols", lambda ctx, vocab_size=16: SymbolsTokenizer(vocab_size))


@dimo_core.hookimpl
def register_conditions(register):
    register("toy_classes", lambda ctx, num_classes=4: ClassLabels(num_classes))


@dimo_core.hookimpl
def register_datasets(register):
    def toy_markov(ctx, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3, seed: int = 0):
        return MarkovData(MarkovSource(vocab_size, seq_len, num_classes, successors, seed))
    register("toy_markov", toy_markov)


@dimo_core.hookimpl
def register_metrics(register):
    def toy_exact(ctx, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3, seed: int = 0):
        return ExactMetrics(MarkovSource(vocab_size, seq_len, num_classes, successors, seed))
    register("toy_exact", toy_exact)


@dimo_core.hookimpl
def register_writers(register):
    register("toy_text", lambda ctx: TextWriter(ctx.tokenizer))


@dimo_core.hookimpl
def register_presets(register):
    register("toy", load_preset(PRESETS / "toy.yaml"))

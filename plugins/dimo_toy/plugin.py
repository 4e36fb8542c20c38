"""Registers the toy source: teacher, symbols tokenizer, class conditions, data, exact metrics."""
from __future__ import annotations

from pathlib import Path

import torch

import dimo_core
from dimo_core.checkpoint import load_state_dict_strict, load_tensors

from .model import ToyMDM
from .source import MarkovSource

ASSETS = Path(__file__).parent / "assets"
SYMBOLS = "abcdefghijklmnopqrstuvwxyz"


def source(vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3, seed: int = 0):
    return MarkovSource(vocab_size, seq_len, num_classes, successors, seed)


class SymbolsTokenizer:
    """Symbol i <-> letter i; the mask id (= vocab_size) lies outside the codes."""
    mask_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[SYMBOLS.index(ch) for ch in t] for t in texts])

    def decode(self, tokens: torch.Tensor) -> list[str]:
        return ["".join(SYMBOLS[i] if i < self.vocab_size else "_" for i in row) for row in tokens.tolist()]


class ClassConditions:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def sample(self, n, generator, split="train"):
        return torch.randint(0, self.num_classes, (n,), generator=generator, device=generator.device)

    def null(self, cond):
        return torch.full_like(cond, self.num_classes)


class MarkovData:
    def __init__(self, src: MarkovSource):
        self.src = src

    def sample(self, n, generator, split="train"):
        labels = torch.randint(0, self.src.num_classes, (n,), generator=generator, device=generator.device).cpu()
        return self.src.sample(labels, _cpu(generator)), labels


def _cpu(generator: torch.Generator) -> torch.Generator:
    if generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))


class ExactMetrics:
    """Exact scores against the source: no network in between."""

    def __init__(self, src: MarkovSource):
        self.src = src
        self.entropy = torch.tensor([src.entropy_per_token(c) for c in range(src.num_classes)])

    def __call__(self, tokens, cond):
        labels = cond.cpu()
        logp = self.src.log_prob(tokens.cpu(), labels)
        valid = torch.isfinite(logp)
        x = tokens.cpu()
        transitions = self.src.transition[labels[:, None], x[:, :-1], x[:, 1:]] > 0
        nll = -(logp[valid].sum() / (valid.sum() * self.src.seq_len)) if valid.any() else torch.tensor(float("nan"))
        pair_tv = []
        for c in range(self.src.num_classes):
            x = tokens[labels == c].cpu()
            if len(x) == 0:
                continue
            counts = torch.zeros(self.src.vocab_size, self.src.vocab_size, dtype=torch.float64)
            counts.index_put_((x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)), torch.ones(x[:, 1:].numel(),
                              dtype=torch.float64), accumulate=True)
            pair_tv.append(0.5 * float((counts / counts.sum() - self.src.pair_frequencies(c)).abs().sum()))
        return {"valid_fraction": float(valid.double().mean()),
                "valid_transitions": float(transitions.double().mean()),  # graded: share of allowed pairs
                "nll_per_token": float(nll),          # exact NLL of the valid samples, nats per token
                "source_entropy_per_token": float(self.entropy[labels].mean()),
                "pair_tv": sum(pair_tv) / len(pair_tv)}  # TV between sample and source pair frequencies


class TextWriter:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows, cond, out_dir):
        lines = ["# Toy samples (class: sequence)", ""]
        for label, tokens in rows.items():
            lines += [f"## {label}", ""] + [f"    class {int(c)}: {s}" for c, s in
                                            zip(cond.tolist(), self.tokenizer.decode(tokens))] + [""]
        path = Path(out_dir) / "samples.md"
        path.write_text("\n".join(lines))
        return [str(path)]


@dimo_core.hookimpl
def register_teachers(register):
    def toy_mdm(ctx, path: str | None = None, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4,
                dim: int = 96, depth: int = 3, heads: int = 4):
        model = ToyMDM(vocab_size, seq_len, num_classes, dim, depth, heads)
        if path:
            tensors, _ = load_tensors(path)
            load_state_dict_strict(model, tensors, path)
        return model
    register("toy_mdm", toy_mdm)


@dimo_core.hookimpl
def register_tokenizers(register):
    register("toy_symbols", lambda ctx, vocab_size=16: SymbolsTokenizer(vocab_size))


@dimo_core.hookimpl
def register_conditions(register):
    register("toy_classes", lambda ctx, num_classes=4: ClassConditions(num_classes))


@dimo_core.hookimpl
def register_datasets(register):
    def toy_markov(ctx, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3, seed: int = 0):
        return MarkovData(source(vocab_size, seq_len, num_classes, successors, seed))
    register("toy_markov", toy_markov)


@dimo_core.hookimpl
def register_metrics(register):
    def toy_exact(ctx, vocab_size: int = 16, seq_len: int = 16, num_classes: int = 4, successors: int = 3, seed: int = 0):
        return ExactMetrics(source(vocab_size, seq_len, num_classes, successors, seed))
    register("toy_exact", toy_exact)


@dimo_core.hookimpl
def register_writers(register):
    register("toy_text", lambda ctx: TextWriter(ctx.tokenizer))


@dimo_core.hookimpl
def register_presets(register):
    from omegaconf import OmegaConf
    preset = OmegaConf.to_container(OmegaConf.load(ASSETS / "toy.yaml"))
    preset["teacher"]["path"] = str(ASSETS / "teacher.safetensors")
    register("toy", preset)

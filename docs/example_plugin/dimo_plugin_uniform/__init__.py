"""A complete, minimal dimo plugin: one teacher, one divergence, one preset."""
import torch
from torch import nn

import dimo_core


class BagOfTokensTeacher(nn.Module):
    """Predicts every position from the mean embedding of the sequence (an MDM, if a weak one)."""

    def __init__(self, vocab_size: int = 8, seq_len: int = 5, dim: int = 16):
        super().__init__()
        self.vocab_size, self.mask_id, self.seq_len = vocab_size, vocab_size, seq_len
        self.embedding = nn.Embedding(vocab_size + 1, dim)
        self.position = nn.Parameter(torch.randn(seq_len, dim) * 0.1)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens, cond, embedding_noise: float = 0.0, generator=None):
        e = dimo_core.perturb_embeddings(self.embedding(tokens), embedding_noise, generator)
        return self.head(e.mean(1, keepdim=True) + self.position)


class HalfFKL:
    """FKL scaled by one half: a divergence of the plugin's own."""

    def value(self, teacher_logits, aux_logits):
        p, lp, lq = teacher_logits.softmax(-1), teacher_logits.log_softmax(-1), aux_logits.log_softmax(-1)
        return 0.5 * (p * (lp - lq)).sum(-1)

    def grad(self, teacher_logits, aux_logits):
        return 0.5 * (aux_logits.softmax(-1) - teacher_logits.softmax(-1))


@dimo_core.hookimpl
def register_teachers(register):
    def bag_of_tokens(ctx, path: str | None = None, vocab_size: int = 8, seq_len: int = 5):
        torch.manual_seed(ctx.seed)
        return BagOfTokensTeacher(vocab_size, seq_len)
    register("bag_of_tokens", bag_of_tokens)


@dimo_core.hookimpl
def register_divergences(register):
    register("half_fkl", lambda ctx: HalfFKL())


@dimo_core.hookimpl
def register_presets(register):
    register("uniform", {"teacher": {"name": "bag_of_tokens"},
                         "distill": {"divergence": {"name": "half_fkl"}, "steps": 3, "batch_size": 4,
                                     "ema": 0.0, "warmup_steps": 0, "ckpt_every": 3}})

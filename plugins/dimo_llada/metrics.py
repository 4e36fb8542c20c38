"""Quality of generated responses: generative perplexity beside entropy and distinct-n, and examples.

Generative perplexity scores each response given its prompt with a reference autoregressive model
that is not the teacher (the bundled one was trained on the `reference` split, which the teacher
never saw): exp of the token-weighted mean NLL over all response tokens. Low perplexity with
collapsed entropy is a failure, so the same call reports
- ``entropy``: mean over samples of the unigram entropy (nats) of each response's tokens;
- ``distinct_1``, ``distinct_2``: distinct n-grams / all n-grams over the whole batch of responses.
All on the response only, never on the prompt.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from dimo_core.errors import CheckpointError

from .teacher import ASSETS, prompt_parts
from .tokenizer import HFTokenizer, load_hf_tokenizer

BUNDLED_REFERENCE = str(ASSETS / "reference")   # autoregressive scorer + the same tokenizer


def unigram_entropy(row: list[int]) -> float:
    counts = Counter(row)
    n = len(row)
    return -sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0


def distinct_n(rows: list[list[int]], n: int) -> float:
    grams = [tuple(r[i:i + n]) for r in rows for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def prompt_rows(cond, batch: int) -> list[list[int]]:
    """The real (unpadded) prompt ids of each row; empty lists when there is no prompt."""
    ids, mask = prompt_parts(cond)
    if ids is None:
        return [[] for _ in range(batch)]
    ids = ids.cpu()
    mask = torch.ones_like(ids) if mask is None else mask.cpu()
    return [row[keep.bool()].tolist() for row, keep in zip(ids, mask)]


class ReferenceScorer:
    """A causal LM folder (the bundled one, or any AutoModelForCausalLM) scoring responses given prompts."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM

        from . import modeling  # noqa: F401  registers the bundled reference architecture
        try:
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                              trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the reference model from {path}: {str(e).splitlines()[0][:300]}") from None
        self.model.eval().requires_grad_(False).to(device)
        config = self.model.config
        self.max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9
        self.tokenizer = load_hf_tokenizer(path, trust_remote_code)   # no mask id needed: it reads text left to right
        self.device = device

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def nll(self, prompts: list[list[int]], responses: list[list[int]], batch_size: int = 64) -> tuple[float, int]:
        """Summed NLL (nats) of the response tokens given [BOS] + prompt, and the number of tokens scored."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        total, count = 0.0, 0
        for start in range(0, len(responses), batch_size):
            seqs, spans = [], []
            for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size]):
                context = p if p[:1] == bos or not bos else bos + p
                if not context:                    # no BOS and no prompt: the first token has no context
                    context, r = r[:1], r[1:]
                r = r[:self.max_len - 1]           # longer than the scorer reads: score what fits,
                context = context[-(self.max_len - len(r)):]   # after the end of the prompt
                seqs.append(context + r)
                spans.append((len(context), len(context) + len(r)))
            width = max(2, max(map(len, seqs)))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, :len(s)] = torch.tensor(s)
                attention[i, :len(s)] = 1
            ids, attention = ids.to(self.device), attention.to(self.device)
            logp = self.model(input_ids=ids, attention_mask=attention).logits.float().log_softmax(-1)
            token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]      # log p(x_{i+1} | x_<=i)
            scored = torch.zeros_like(token_logp, dtype=torch.bool)
            for i, (lo, hi) in enumerate(spans):
                scored[i, lo - 1:hi - 1] = True
            total -= float(token_logp[scored].sum())
            count += int(scored.sum())
        return total, count


class TextQuality:
    """``text_quality`` metric: gen_ppl (and its nll), entropy, distinct_1, distinct_2 of responses."""

    def __init__(self, tokenizer: HFTokenizer, scorer: ReferenceScorer, retokenize: bool | None = None,
                 batch_size: int = 64):
        self.tokenizer, self.scorer, self.batch_size = tokenizer, scorer, batch_size
        if retokenize is None:  # same vocabulary: score the generated ids as they are (no canonicalising)
            retokenize = tokenizer.hf.get_vocab() != scorer.tokenizer.get_vocab()
        self.retokenize = retokenize

    def __call__(self, tokens: Tensor, cond) -> dict[str, float]:
        responses = tokens.cpu().tolist()
        prompts = prompt_rows(cond, len(responses))
        if self.retokenize:   # the published protocol with a foreign scorer: text in, its own tokens
            text = lambda ids: self.tokenizer.hf.decode(ids, skip_special_tokens=True)
            prompts = [self.scorer.ids(text(p)) for p in prompts]
            scored = [self.scorer.ids(text(r)) for r in responses]
        else:
            scored = responses
        total, count = self.scorer.nll(prompts, scored, self.batch_size)
        nll = total / max(count, 1)
        return {"gen_ppl": math.exp(nll), "nll": nll,
                "entropy": sum(map(unigram_entropy, responses)) / max(len(responses), 1),
                "distinct_1": distinct_n(responses, 1), "distinct_2": distinct_n(responses, 2)}

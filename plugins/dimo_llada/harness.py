"""An lm-evaluation-harness model ``dimo``: a distilled text student (or its teacher) answers the
harness's ``generate_until`` requests.

    python -m dimo_llada.harness --model dimo --model_args out_dir=runs/llada --tasks TASK ...

is ``lm_eval`` with this model registered (lm-eval finds models by import, not by entry point; in
Python, ``import dimo_llada.harness`` then ``lm_eval.simple_evaluate(model="dimo", ...)``).
``model_args``: ``out_dir`` (the run), ``plugins`` (default llada), ``source=student|teacher``,
``steps`` (student: k passes, default 1; teacher: default ``sample.steps``, with ``sample.sampler``
and ``sample.guidance``, the run's teacher settings), ``temperature`` (student; default
``sample.temperature``), ``overrides`` (further ``key=value`` dimo overrides, space separated),
``batch_size``, ``seed``. A masked diffusion student writes a fixed-length response (``teacher.seq_len``
tokens): the answer is its text up to the first of the request's ``until`` strings. Tasks scored by
log-likelihood are refused: a one-step generator gives no likelihood of a given continuation.
"""
from __future__ import annotations

import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.errors import ConfigError
from dimo_core.registry import get_registry
from dimo_core.sample import draw_student, draw_teacher, prompt_conditions
from dimo_core.student import load_student


def cut_at(text: str, until: list[str] | str | None) -> str:
    """The text before the first stop string (lm-eval's ``until``)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    ends = [text.find(s) for s in stops if s and s in text]
    return text[:min(ends)] if ends else text


@register_model("dimo")
class DimoLM(LM):
    def __init__(self, out_dir: str, plugins: str = "llada", source: str = "student", steps: int | None = None,
                 temperature: float | None = None, overrides: str = "", batch_size: int | str = 16, seed: int = 0,
                 **_harness_kwargs):
        super().__init__()
        if source not in ("student", "teacher"):
            raise ConfigError(f"model_args source={source}: choose student or teacher")
        registry = get_registry()
        config = load_config([f"plugins={plugins}", f"out_dir={out_dir}", *overrides.split()], registry)
        self.ctx = Context(config, registry)
        self.source, self.seed = source, int(seed)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16   # "auto": a fixed size
        sample = config.sample
        self.steps = int(steps) if steps is not None else (1 if source == "student" else sample.steps)
        self.temperature = float(temperature) if temperature is not None else sample.temperature
        if source == "student":
            self.student = load_student(self.ctx, sample.student)
        else:
            self.sampler = self.ctx.build("samplers", sample.sampler, "sample.sampler")

    def _draw(self, prompts: list[str], generator: torch.Generator) -> list[str]:
        cond = prompt_conditions(self.ctx, prompts, len(prompts))
        if self.source == "student":
            tokens = draw_student(self.ctx, self.student, cond, len(prompts), self.steps, self.temperature, generator)
        else:
            tokens = draw_teacher(self.ctx, self.sampler, cond, len(prompts), self.steps,
                                  self.ctx.config.sample.guidance, generator)
        # answers as text: special tokens ([BOS], [MASK], padding) are not part of an answer
        return self.ctx.tokenizer.hf.batch_decode(tokens.tolist(), skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        answers = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start:start + self.batch_size]
            generator = torch.Generator(self.ctx.device).manual_seed(self.seed + start)  # batch i: seed + offset
            texts = self._draw([r.args[0] for r in batch], generator)
            for request, text in zip(batch, texts):
                answer = cut_at(text, (request.args[1] or {}).get("until"))
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", request.args, answer)
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("model dimo generates (generate_until tasks); a one-step student gives no "
                                  "log-likelihood of a given continuation")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("model dimo generates (generate_until tasks); it has no rolling log-likelihood")


def main() -> None:
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())

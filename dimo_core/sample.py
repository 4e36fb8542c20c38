"""`dimo sample`, and the drawing helpers `dimo eval` shares: the teacher at N steps, the student."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .checkpoint import save_tensors
from .context import Context
from .errors import ConfigError
from .run_folder import one_process, prepare_out_dir
from .sampling import student_sample
from .stages import schedule_r_init
from .student import load_student


def model_fn(model: torch.nn.Module, sigma: float = 0.0, generator: torch.Generator | None = None):
    """The model as a logits function; its embedding noise (sigma > 0) draws from ``generator``."""
    noise = {"generator": generator} if sigma else {}   # teachers without noise need not take one
    return lambda x, c: model(x, c, embedding_noise=sigma, **noise).float()


@torch.no_grad()
def draw_teacher(ctx: Context, sampler, cond, n: int, steps: int, guidance: float, generator) -> torch.Tensor:
    teacher = ctx.teacher.eval()
    x = torch.full((n, teacher.seq_len), teacher.mask_id, device=ctx.device)
    null = ctx.conditions.null(cond) if cond is not None else None
    return sampler(model_fn(teacher), x, cond, null, steps=steps, guidance=guidance,
                   mask_id=teacher.mask_id, generator=generator)


@torch.no_grad()
def draw_student(ctx: Context, student, cond, n: int, steps: int, temperature: float, generator) -> torch.Tensor:
    init = ctx.build("init_strategies", ctx.config.distill.init, "distill.init")
    x_init = init(n, student.seq_len, student.vocab_size, student.mask_id, generator, ctx.device)
    r_init = schedule_r_init(init) if steps > 1 else 0.0   # the ratios of stages 2..k scale it
    return student_sample(model_fn(student, ctx.config.distill.sigma, generator), x_init, cond, mask_id=student.mask_id,
                          generator=generator, temperature=temperature, steps=steps, r_init=r_init)


def prompt_conditions(ctx: Context, prompts: list[str], n: int):
    """``sample.prompt``: conditions written as text, cycled over n samples."""
    conditions = ctx.conditions if ctx.config.conditions.name else None
    if not hasattr(conditions, "from_text"):
        raise ConfigError(f"conditions {ctx.config.conditions.name!r} cannot be given as text; drop prompt= "
                          f"(this plugin's conditions have no from_text)")
    return conditions.from_text([prompts[i % len(prompts)] for i in range(n)])


def eval_conditions(ctx: Context, n: int, seed: int):
    if not ctx.config.conditions.name:
        return None
    return ctx.conditions.sample(n, torch.Generator(ctx.device).manual_seed(seed), split="eval")


def sample(ctx: Context) -> dict[str, torch.Tensor]:
    """``dimo sample``: draw from the teacher at N steps or from the student; save tokens and pictures."""
    cfg = ctx.config.sample
    one_process("sample")
    out = prepare_out_dir(ctx, "sample")
    cond = prompt_conditions(ctx, cfg.prompt, cfg.n) if cfg.prompt else eval_conditions(ctx, cfg.n, cfg.seed)
    rows, tensors = {}, {}
    if cfg.source in ("teacher", "both"):
        sampler = ctx.build("samplers", cfg.sampler, "sample.sampler")
        generator = torch.Generator(ctx.device).manual_seed(cfg.seed)
        tensors["teacher"] = rows[f"teacher {cfg.steps} step{'s' * (cfg.steps > 1)}"] = draw_teacher(
            ctx, sampler, cond, cfg.n, cfg.steps, cfg.guidance, generator)
    if cfg.source in ("student", "both"):
        student = load_student(ctx, cfg.student)
        generator = torch.Generator(ctx.device).manual_seed(cfg.seed)
        steps = max(cfg.student_steps or max(student.trained_steps), 1)
        tensors["student"] = rows["student" if steps == 1 else f"student {steps} steps"] = draw_student(
            ctx, student, cond, cfg.n, steps, cfg.temperature, generator)
    stamp = unused_stamp(out)
    paths = [out / f"sample-{stamp}.safetensors"]
    save_tensors(paths[0], tensors, {"labels": list(rows)})
    if ctx.config.eval.writer and ctx.config.eval.writer.name:
        writer = ctx.build("writers", ctx.config.eval.writer, "eval.writer")
        paths += write_stamped(writer, rows, cond, out, stamp)
    return Samples(rows, paths)


class Samples(dict):
    """The rows drawn ({label: tokens}), and ``paths``: the files written."""

    def __init__(self, rows: dict, paths: list[Path]):
        super().__init__(rows)
        self.paths = paths


def unused_stamp(out: Path) -> str:
    """A time stamp no earlier ``dimo sample`` in ``out`` used (two in one second get -2, -3, ...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    taken = {p.name.split(".")[0] for p in out.glob(f"sample-{stamp}*")}
    n = 1
    while (f"sample-{stamp}" if n == 1 else f"sample-{stamp}-{n}") in taken:
        n += 1
    return stamp if n == 1 else f"{stamp}-{n}"


def write_stamped(writer, rows, cond, out: Path, stamp: str) -> list[Path]:
    """Run the writer in a scratch folder, then name its files sample-<stamp>.<ext>: `dimo sample` never
    replaces a file of `dimo eval`'s report (the writer's default names are the report's)."""
    scratch = Path(tempfile.mkdtemp(prefix=".sample-", dir=out))
    try:
        written = [Path(p) for p in writer(rows, cond, str(scratch))]
        suffixes = [p.suffix for p in written]
        paths = []
        for p in written:
            name = f"sample-{stamp}{p.suffix}" if suffixes.count(p.suffix) == 1 else f"sample-{stamp}-{p.name}"
            os.replace(p, out / name)
            paths.append(out / name)
        return paths
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

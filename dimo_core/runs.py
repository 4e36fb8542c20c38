"""What the CLI commands do: distil, train a teacher, sample, evaluate. Everything lands in out_dir."""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import load_json, load_state_dict_strict, load_tensors, save_json, save_tensors
from .conditions import conditions_len, index_conditions, where_conditions
from .config import to_yaml
from .context import Context
from .engine import DiMOEngine, masked_cross_entropy
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .masking import mask_ratio, mask_tokens
from .sampling import student_sample, suppress_mask_column

STUDENT_FILE = "student.safetensors"
TEACHER_FILE = "teacher.safetensors"


class Checkpoints:
    """step_XXXXXXXX/ folders written whole under a temporary name, then renamed; ``latest.json``
    (replaced atomically) names the newest complete one, so a killed run never reads a partial one."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def save(self, step: int, tensors: dict, meta: dict) -> Path:
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".step_{step:08d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_tensors(tmp / "state.safetensors", tensors)
        save_json(tmp / "state.json", meta)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        save_json(self.root / "latest.json", {"step": step, "dir": final.name})
        for old in sorted(p for p in self.root.glob("step_*") if p != final)[:-self.keep + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> tuple[dict, dict, Path] | None:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        folder = self.root / load_json(pointer)["dir"]
        tensors, _ = load_tensors(folder / "state.safetensors")
        return tensors, load_json(folder / "state.json"), folder


class JsonLog:
    """Append-only JSONL log; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        lines = path.read_text().splitlines() if path.exists() and resume_step > 0 else []
        kept = [l for l in lines if l.strip() and json.loads(l).get("step", 0) <= resume_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(l + "\n" for l in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _prepare_out_dir(ctx: Context, name: str) -> Path:
    out = ctx.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.config.yaml").write_text(to_yaml(ctx.config))
    except OSError as e:
        raise ConfigError(f"cannot write to out_dir={out}: {e.strerror}; choose a writable out_dir=PATH") from None
    return out


def teacher_spec(ctx: Context) -> dict:
    return ctx.config.teacher.spec()


# ---- distillation ---------------------------------------------------------------------------------
def build_engine(ctx: Context) -> DiMOEngine:
    cfg = ctx.config
    conditions = ctx.conditions if cfg.conditions.name else None
    divergence = ctx.build("divergences", cfg.distill.divergence, "distill.divergence")
    init = ctx.build("init_strategies", cfg.distill.init, "distill.init")
    return DiMOEngine(ctx.teacher, conditions, divergence, init, cfg.distill, seed=cfg.seed, dtype=cfg.dtype)


def distill(ctx: Context, progress: bool = True) -> Path:
    """``dimo run``: distil the teacher into a one-step student; resumes from out_dir's checkpoints."""
    cfg = ctx.config.distill
    out = _prepare_out_dir(ctx, "run")
    engine = build_engine(ctx)
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    last = checkpoints.latest() if ctx.config.resume else None
    if last:
        engine.load_state(last[0], last[1])
    log = JsonLog(out / "train_log.jsonl", engine.step)
    bar = tqdm(total=cfg.steps, initial=engine.step, desc="distil", disable=not progress, dynamic_ncols=True)
    last_dir = last[2] if last else None
    try:
        while engine.step < cfg.steps:
            logs = engine.safe_step()
            bar.update(1)
            if logs and (engine.step % cfg.log_every == 0 or engine.step == cfg.steps):
                log.write({"step": engine.step, "skipped": engine.skipped, **logs})
                bar.set_postfix(div=f"{logs['div']:.4f}", aux=f"{logs['aux_loss']:.3f}")
            if engine.step % cfg.ckpt_every == 0 or engine.step == cfg.steps:
                tensors, meta = engine.state()
                last_dir = checkpoints.save(engine.step, tensors, meta)
                save_student(out / STUDENT_FILE, engine, ctx)
    except NonFiniteLossError as e:
        where = f"the last good checkpoint is {last_dir}" if last_dir else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e}; {where}") from None
    finally:
        bar.close()
    return out / STUDENT_FILE


def save_student(path: Path, engine: DiMOEngine, ctx: Context) -> None:
    save_tensors(path, engine.student_state_dict(),
                 {"teacher": teacher_spec(ctx), "step": engine.step, "ema": bool(engine.ema),
                  "init": ctx.config.distill.init.spec(), "sigma": ctx.config.distill.sigma})


def load_student(ctx: Context, path: str | Path | None = None) -> torch.nn.Module:
    path = Path(path or ctx.out_dir / STUDENT_FILE)
    if not path.exists():
        raise CheckpointError(f"no student at {path}; run `dimo run plugins=...` with out_dir={ctx.out_dir} first "
                              f"(or pass student=PATH)")
    tensors, meta = load_tensors(path, ctx.device)
    student = copy.deepcopy(ctx.teacher)
    load_state_dict_strict(student, tensors, str(path))
    return student.eval().requires_grad_(False)


# ---- teacher training (eq. 3) ----------------------------------------------------------------------
def train_teacher(ctx: Context, progress: bool = True) -> Path:
    """``dimo train-teacher``: the MDM loss (eq. 3) on the plugin's dataset."""
    cfg = ctx.config.train_teacher
    out = _prepare_out_dir(ctx, "train_teacher")
    # a fresh teacher, or the one to fine-tune: the preset's `teacher.path` is what we are replacing
    ctx.config.teacher = ctx.config.teacher.model_copy(update={"path": cfg.init_from})
    model = ctx.teacher.train().requires_grad_(True)
    data, conditions = ctx.dataset, (ctx.conditions if ctx.config.conditions.name else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    rng = torch.Generator(ctx.device).manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    checkpoints = Checkpoints(out / "teacher_checkpoints")
    step = 0
    last = checkpoints.latest() if ctx.config.resume else None
    if last:
        tensors, meta, _ = last
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        from .engine import _load_optimizer_state
        _load_optimizer_state(opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
        rng.set_state(tensors["rng.engine"])
        torch.set_rng_state(tensors["rng.torch"])
        step = meta["step"]
    log = JsonLog(out / "teacher_log.jsonl", step)
    bar = tqdm(total=cfg.steps, initial=step, desc="train teacher", disable=not progress, dynamic_ncols=True)
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(cfg, step)
        tokens, cond = data.sample(cfg.batch_size, rng)
        tokens = tokens.to(ctx.device)
        x_t, masked = mask_for_training(tokens, cfg, model.mask_id, rng)
        if cond is not None and conditions is not None and cfg.cond_drop > 0:
            keep = torch.rand(tokens.shape[0], generator=rng, device=rng.device) >= cfg.cond_drop
            cond = where_conditions(keep, cond, conditions.null(cond))
        positions = masked if cfg.loss_positions == "masked" else torch.ones_like(masked)
        loss = masked_cross_entropy(model(x_t, cond), tokens, positions, model.mask_id, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite teacher loss at step {step}; lower train_teacher.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write({"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            from .engine import _optimizer_state
            opt_tensors, groups = _optimizer_state(opt, "opt")
            tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors,
                       "rng.engine": rng.get_state(), "rng.torch": torch.get_rng_state()}
            checkpoints.save(step, tensors, {"step": step, "opt": groups})
    bar.close()
    spec = {k: v for k, v in teacher_spec(ctx).items() if k != "path"}
    path = out / TEACHER_FILE
    save_tensors(path, model.state_dict(), {"teacher": spec, "train_teacher": cfg.model_dump(mode="json"),
                                            "steps": step})
    return path


def mask_for_training(tokens, cfg, mask_id: int, rng: torch.Generator):
    """Eq. 3's forward process: ratio r(t), t ~ U(0,1); per-token Bernoulli (MaskGit) or exact count."""
    t = torch.rand(tokens.shape[0], generator=rng, device=rng.device)
    r = mask_ratio(cfg.schedule, t)
    if cfg.masking == "exact":
        return mask_tokens(tokens, r, mask_id, rng)
    masked = torch.rand(tokens.shape, generator=rng, device=rng.device) < r[:, None]
    return tokens.masked_fill(masked, mask_id), masked


def _cosine_lr(cfg, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- sampling --------------------------------------------------------------------------------------
def model_fn(model: torch.nn.Module, sigma: float = 0.0):
    return lambda x, c: model(x, c, embedding_noise=sigma).float()


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
    r_init = getattr(init, "r_init", 0.6)
    return student_sample(model_fn(student, ctx.config.distill.sigma), x_init, cond, mask_id=student.mask_id,
                          generator=generator, temperature=temperature, steps=steps,
                          r_init=r_init if isinstance(r_init, float) else sum(r_init) / 2)


def eval_conditions(ctx: Context, n: int, seed: int):
    if not ctx.config.conditions.name:
        return None
    return ctx.conditions.sample(n, torch.Generator(ctx.device).manual_seed(seed), split="eval")


def sample(ctx: Context) -> dict[str, torch.Tensor]:
    """``dimo sample``: draw from the teacher at N steps or from the student; save tokens and pictures."""
    cfg = ctx.config.sample
    out = _prepare_out_dir(ctx, "sample")
    cond = eval_conditions(ctx, cfg.n, cfg.seed)
    generator = torch.Generator(ctx.device).manual_seed(cfg.seed)
    if cfg.source == "teacher":
        sampler = ctx.build("samplers", cfg.sampler, "sample.sampler")
        label = f"teacher {cfg.steps} steps"
        tokens = draw_teacher(ctx, sampler, cond, cfg.n, cfg.steps, cfg.guidance, generator)
    else:
        student = load_student(ctx, cfg.student)
        label = "student" if cfg.steps == 1 else f"student {cfg.steps} steps"
        tokens = draw_student(ctx, student, cond, cfg.n, cfg.steps if cfg.steps > 0 else 1, cfg.temperature, generator)
    rows = {label: tokens}
    save_tensors(out / "samples.safetensors", {"tokens": tokens}, {"label": label})
    if ctx.config.eval.writer and ctx.config.eval.writer.name:
        writer = ctx.build("writers", ctx.config.eval.writer, "eval.writer")
        writer(rows, cond, str(out))
    return rows

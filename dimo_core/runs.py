"""What the CLI commands do: distil, train a teacher, sample, evaluate. Everything lands in out_dir."""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .attention import set_attention_backend
from .checkpoint import load_json, load_state_dict_strict, load_tensors, save_json, save_tensors
from .conditions import conditions_len, index_conditions, where_conditions
from .config import to_yaml
from .context import Context
from .distributed import Parallel
from .engine import DiMOEngine, lr_factor, masked_cross_entropy
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .memory import ModelShape, estimate_memory, format_bytes, free_memory, peak_memory, reset_peak
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
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            save_tensors(tmp / "state.safetensors", tensors)
            save_json(tmp / "state.json", meta)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            save_json(self.root / "latest.json", {"step": step, "dir": final.name})
        except (OSError, CheckpointError) as e:
            shutil.rmtree(tmp, ignore_errors=True)  # no partial folder left behind (disk full, read-only)
            cause = e.__cause__ if isinstance(e, CheckpointError) and e.__cause__ else e
            problem = getattr(cause, "strerror", None) or str(cause)
            raise CheckpointError(f"could not write the checkpoint of step {step} in {self.root}: {problem}; "
                                  f"{self._intact()}") from None
        for old in sorted(p for p in self.root.glob("step_*") if p != final)[:-self.keep + 1 or None]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _intact(self) -> str:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return "no earlier checkpoint exists"
        return f"the previous checkpoint ({self.root / load_json(pointer)['dir']}) is intact"

    def latest(self) -> tuple[dict, dict, Path] | None:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        named = load_json(pointer)
        if not isinstance(named, dict) or not isinstance(named.get("dir"), str):
            raise CheckpointError(f"{pointer} does not name a checkpoint folder (expected {{\"step\": N, \"dir\": "
                                  f"\"step_...\"}}); delete it to start over")
        folder = self.root / named["dir"]
        tensors, _ = load_tensors(folder / "state.safetensors")
        meta = load_json(folder / "state.json")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{folder / 'state.json'} is not a checkpoint's state (a JSON object)")
        return tensors, meta, folder


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
def build_engine(ctx: Context, parallel: Parallel | None = None) -> DiMOEngine:
    cfg = ctx.config
    conditions = ctx.conditions if cfg.conditions.name else None
    divergence = ctx.build("divergences", cfg.distill.divergence, "distill.divergence")
    init = ctx.build("init_strategies", cfg.distill.init, "distill.init")
    return DiMOEngine(ctx.teacher, conditions, divergence, init, cfg.distill, seed=cfg.seed, dtype=cfg.dtype,
                      parallel=parallel)


def distill(ctx: Context, progress: bool = True) -> Path:
    """``dimo run``: distil the teacher into a one-step student; resumes from out_dir's checkpoints.

    Under torchrun every process runs this; rank 0 alone writes files (see distributed.py)."""
    parallel = Parallel.start(ctx.config)
    try:
        return _distill(ctx, parallel, progress and parallel.is_main)
    finally:
        parallel.stop()


def _distill(ctx: Context, parallel: Parallel, progress: bool) -> Path:
    cfg = ctx.config.distill
    ctx.device = parallel.device  # under torchrun: this process's GPU
    memory_at_start = peak_memory(parallel.device)  # CPU: the resident set of Python and torch before the models
    set_attention_backend(ctx.config.performance.attention)
    out = parallel.on_main(lambda: _prepare_out_dir(ctx, "run"), "prepare out_dir") or ctx.out_dir
    torch.manual_seed(ctx.seed)  # the same teacher on every rank, even one initialised at random
    estimate = check_memory(ctx, parallel)
    engine = build_engine(ctx, parallel)
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    last = checkpoints.latest() if ctx.config.resume else None
    if last:
        engine.load_state(last[0], last[1], str(last[2]))
    log = JsonLog(out / "train_log.jsonl", engine.step) if parallel.is_main else None
    bar = tqdm(total=cfg.steps, initial=engine.step, desc="distil", disable=not progress, dynamic_ncols=True)
    last_dir = last[2] if last else None
    reset_peak(parallel.device)
    try:
        while engine.step < cfg.steps:
            logs = engine.safe_step()
            bar.update(1)
            if logs is None:  # a non-finite batch skipped on every rank: counted in the log
                log and log.write({"step": engine.step, "skipped": engine.skipped, "nonfinite": engine.last_skip})
            elif engine.step % cfg.log_every == 0 or engine.step == cfg.steps:
                logs = parallel.mean(logs)
                log and log.write({"step": engine.step, "skipped": engine.skipped, **logs})
                bar.set_postfix(div=f"{logs['div']:.4f}", aux=f"{logs['aux_loss']:.3f}")
            if engine.step % cfg.ckpt_every == 0 or engine.step == cfg.steps:
                last_dir = save_checkpoint(engine, checkpoints, out, ctx) or last_dir
    except NonFiniteLossError as e:
        log and log.write({"step": engine.step, "skipped": engine.skipped, "stopped": str(e)})
        where = f"the last good checkpoint is {last_dir}" if last_dir else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e}; {where}") from None
    finally:
        bar.close()
    report_peak_memory(estimate, parallel, out, memory_at_start)
    return out / STUDENT_FILE


def save_checkpoint(engine: DiMOEngine, checkpoints: "Checkpoints", out: Path, ctx: Context) -> Path | None:
    """Every rank gathers (FSDP shards); rank 0 writes the step folder and the student."""
    tensors, meta = engine.state()
    student = engine.student_state_dict()

    def write():
        folder = checkpoints.save(engine.step, tensors, meta)
        save_student(out / STUDENT_FILE, student, engine, ctx)
        return folder
    return engine.parallel.on_main(write, "write the checkpoint")


def save_student(path: Path, weights: dict, engine: DiMOEngine, ctx: Context) -> None:
    save_tensors(path, weights,
                 {"teacher": teacher_spec(ctx), "step": engine.step, "ema": bool(engine.ema), "partial": engine.partial,
                  "init": ctx.config.distill.init.spec(), "sigma": ctx.config.distill.sigma})


def check_memory(ctx: Context, parallel: Parallel):
    """Print the memory estimate per process; refuse to start when it exceeds what is free."""
    perf, cfg = ctx.config.performance, ctx.config.distill
    if not perf.memory_check:
        return None
    teacher = ctx.teacher
    estimate = estimate_memory(ModelShape.of(teacher, cfg.frozen),
                               batch_per_rank=cfg.batch_size // (cfg.grad_accum * parallel.world),
                               dtype=ctx.config.dtype, strategy=parallel.strategy, world=parallel.world,
                               activation_checkpointing=perf.activation_checkpointing, ema=cfg.ema > 0,
                               cuda=parallel.device.type == "cuda")
    loaded = sum(p.numel() * p.element_size() for p in teacher.parameters())  # already counted by free memory
    free = free_memory(parallel.device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if parallel.is_main:
        print(estimate.table() + f"\n  free on {parallel.device}: {format_bytes(free)}", flush=True)
    if not parallel.all_true(estimate.total - loaded <= free):
        raise ConfigError(f"this run needs about {format_bytes(estimate.total)} per process but "
                          f"{parallel.device} has {format_bytes(free)} free ({estimate.setting}); try "
                          f"performance.activation_checkpointing=true, dtype=bfloat16, a larger distill.grad_accum, "
                          f"distributed.strategy=fsdp on more processes, or LoRA where the plugin offers it "
                          f"(performance.memory_check=false skips this check)")
    return estimate


def report_peak_memory(estimate, parallel: Parallel, out: Path, at_start: int) -> None:
    peak = parallel.max(peak_memory(parallel.device))
    if parallel.device.type == "cuda":
        kind, comparable = "torch.cuda.max_memory_allocated", peak
    else:  # the resident set includes Python and torch: its growth is what compares with the estimate
        kind, comparable = "peak resident set", peak - at_start
    if not parallel.is_main:
        return
    record = {"peak_bytes": peak, "peak_kind": kind, "peak_above_start_bytes": comparable,
              "device": str(parallel.device), "processes": parallel.world, "strategy": parallel.strategy}
    if estimate is not None:
        record.update(estimate_bytes=estimate.total, estimate=estimate.parts, setting=estimate.setting)
    growth = f", {format_bytes(comparable)} above the start" if comparable != peak else ""
    print(f"peak memory per process: {format_bytes(peak)} ({kind}{growth})"
          + (f"; estimated {format_bytes(estimate.total)}" if estimate else ""), flush=True)
    try:
        save_json(out / "memory.json", record)
    except CheckpointError:
        pass  # a report, not state: the run itself succeeded


def load_student(ctx: Context, path: str | Path | None = None) -> torch.nn.Module:
    path = Path(path or ctx.out_dir / STUDENT_FILE)
    if not path.exists():
        raise CheckpointError(f"no student at {path}; run `dimo run plugins=...` with out_dir={ctx.out_dir} first "
                              f"(or pass student=PATH)")
    tensors, meta = load_tensors(path, ctx.device)
    student = copy.deepcopy(ctx.teacher)
    if meta.get("partial"):  # trainable tensors only: the rest must come from the same teacher
        def architecture(spec):  # the path may differ (a moved folder); the rest must not
            return {k: v for k, v in (spec or {}).items() if k != "path"}
        if architecture(meta.get("teacher")) != architecture(teacher_spec(ctx)):
            raise CheckpointError(f"{path} holds only the tensors its run trained; the others are its teacher's, "
                                  f"{meta.get('teacher')}, but the configured teacher is {teacher_spec(ctx)}; "
                                  f"set teacher.* to the run's teacher (its run.config.yaml has them)")
        load_state_dict_strict(student, tensors, str(path), required=set(tensors))
    else:
        load_state_dict_strict(student, tensors, str(path))
    return student.eval().requires_grad_(False)


# ---- teacher training (eq. 3) ----------------------------------------------------------------------
def train_teacher(ctx: Context, progress: bool = True) -> Path:
    """``dimo train-teacher``: the MDM loss (eq. 3) on the plugin's dataset."""
    cfg = ctx.config.train_teacher
    _one_process("train-teacher")
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
            group["lr"] = cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
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


def _one_process(command: str) -> None:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError(f"`dimo {command}` runs in one process; launch it without torchrun "
                          f"(only `dimo run` is distributed)")


def mask_for_training(tokens, cfg, mask_id: int, rng: torch.Generator):
    """Eq. 3's forward process: ratio r(t), t ~ U(0,1); per-token Bernoulli (MaskGit) or exact count."""
    t = torch.rand(tokens.shape[0], generator=rng, device=rng.device)
    r = mask_ratio(cfg.schedule, t)
    if cfg.masking == "exact":
        return mask_tokens(tokens, r, mask_id, rng)
    masked = torch.rand(tokens.shape, generator=rng, device=rng.device) < r[:, None]
    return tokens.masked_fill(masked, mask_id), masked


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


@contextmanager
def global_rng_from(generator: torch.Generator):
    """Run the block on torch's global RNG seeded from ``generator``, then restore the global state.

    Plugins draw the embedding noise (``perturb_embeddings``) from the global RNG. Without this, a
    student row would depend on what the process did before it (training, earlier rows). The seed is
    a hash of the generator's state, so the generator's own stream (x_init, the draw) is untouched."""
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    seed = int.from_bytes(digest, "little") >> 1
    with torch.random.fork_rng(devices=[generator.device] if generator.device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def draw_student(ctx: Context, student, cond, n: int, steps: int, temperature: float, generator) -> torch.Tensor:
    init = ctx.build("init_strategies", ctx.config.distill.init, "distill.init")
    x_init = init(n, student.seq_len, student.vocab_size, student.mask_id, generator, ctx.device)
    r_init = getattr(init, "r_init", 0.6)
    with global_rng_from(generator):
        return student_sample(model_fn(student, ctx.config.distill.sigma), x_init, cond, mask_id=student.mask_id,
                              generator=generator, temperature=temperature, steps=steps,
                              r_init=r_init if isinstance(r_init, float) else sum(r_init) / 2)


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
    _one_process("sample")
    out = _prepare_out_dir(ctx, "sample")
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
        steps = max(cfg.student_steps, 1)
        tensors["student"] = rows["student" if steps == 1 else f"student {steps} steps"] = draw_student(
            ctx, student, cond, cfg.n, steps, cfg.temperature, generator)
    save_tensors(out / "samples.safetensors", tensors, {"labels": list(rows)})
    if ctx.config.eval.writer and ctx.config.eval.writer.name:
        writer = ctx.build("writers", ctx.config.eval.writer, "eval.writer")
        writer(rows, cond, str(out))
    return rows

"""`dimo run`: distil the teacher into a one-step student; resumes from out_dir's checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm
import torch

from .attention import set_attention_backend
from .checkpoint import save_json
from .context import Context
from .distributed import Parallel
from .engine import DiMOEngine, autocast_dtype
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .memory import ModelShape, estimate_memory, format_bytes, free_memory, peak_memory, reset_peak
from .run_folder import STUDENT_FILE, Checkpoints, JsonLog, prepare_out_dir
from .student import save_student


def build_engine(ctx: Context, parallel: Parallel | None = None) -> DiMOEngine:
    cfg = ctx.config
    conditions = ctx.conditions if cfg.conditions.name else None
    divergence = ctx.build("divergences", cfg.distill.divergence, "distill.divergence")
    init = ctx.build("init_strategies", cfg.distill.init, "distill.init")
    return DiMOEngine(ctx.teacher, conditions, divergence, init, cfg.distill, seed=cfg.seed, dtype=cfg.dtype,
                      parallel=parallel,
                      cuda_graph=cfg.performance.cuda_graph and not cfg.performance.compile)


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
    out = parallel.on_main(lambda: prepare_out_dir(ctx, "run"), "prepare out_dir") or ctx.out_dir
    torch.manual_seed(ctx.seed)  # the same teacher on every rank, even one initialised at random
    estimate = check_memory(ctx, parallel)
    engine = build_engine(ctx, parallel)
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    last = checkpoints.latest() if ctx.config.resume else None
    if last:
        engine.load_state(last[0], last[1], str(last[2]))
    log = JsonLog(out / "train_log.jsonl", engine.step) if parallel.is_main else None
    if log and ctx.config.log.tensorboard:
        from .tracking import TensorBoardLog
        log = TensorBoardLog(log, out / "tensorboard")
    bar = tqdm(total=cfg.steps, initial=engine.step, desc="distil", disable=not progress, dynamic_ncols=True)
    last_dir = last[2] if last else None
    reset_peak(parallel.device)
    try:
        while engine.step < cfg.steps:
            logs = engine.train_step()  # device values: read on logging and checkpoint steps only
            bar.update(1)
            logging = engine.step % cfg.log_every == 0 or engine.step == cfg.steps
            checkpoint = engine.step % cfg.ckpt_every == 0 or engine.step == cfg.steps
            if logging or checkpoint:
                new_skips = engine.check_finite()  # non-finite batches since the last check (raise: stops here)
                if logging or new_skips:
                    write_log(log, bar, engine, logs, new_skips)
            if checkpoint:
                last_dir = save_checkpoint(engine, checkpoints, out, ctx) or last_dir
    except NonFiniteLossError as e:
        log and log.write({"step": engine.nonfinite_step, "skipped": engine.skipped, "stopped": str(e)})
        where = f"the last good checkpoint is {last_dir}" if last_dir else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e}; {where}") from None
    finally:
        bar.close()
    if engine.graph_note and parallel.is_main:
        print(f"note: {engine.graph_note}", flush=True)
    report_peak_memory(estimate, parallel, out, memory_at_start)
    return out / STUDENT_FILE


def write_log(log: JsonLog | None, bar, engine: DiMOEngine, logs: dict, new_skips: int) -> None:
    """One log line: the step's losses (averaged over processes) unless this batch was skipped, and
    the batches skipped so far with why, when some were skipped since the last line."""
    record = {"step": engine.step, "skipped": engine.skipped}
    if new_skips:
        record["nonfinite"] = engine.last_skip
    if not engine.last_step_skipped:
        logs = engine.read_logs(logs)
        record.update(logs)
        bar.set_postfix(div=f"{logs['div']:.4f}", aux=f"{logs['aux_loss']:.3f}")
    log and log.write(record)


def save_checkpoint(engine: DiMOEngine, checkpoints: "Checkpoints", out: Path, ctx: Context) -> Path | None:
    """Every rank gathers (FSDP shards); rank 0 writes the step folder and the student."""
    tensors, meta = engine.state()
    student = engine.student_state_dict()

    def write():
        folder = checkpoints.save(engine.step, tensors, meta)
        save_student(out / STUDENT_FILE, student, engine, ctx)
        return folder
    return engine.parallel.on_main(write, "write the checkpoint")


def model_shape(ctx: Context) -> ModelShape:
    """The teacher's shape for the memory estimate; a text prompt (conditions with ``prompt_len``) is
    part of the sequence the model reads: prompt + response tokens per sample."""
    prompt_tokens = getattr(ctx.conditions, "prompt_len", 0) if ctx.config.conditions.name else 0
    return ModelShape.of(ctx.teacher, ctx.config.distill.frozen, condition_tokens=prompt_tokens)


def check_memory(ctx: Context, parallel: Parallel):
    """Print the memory estimate per process; refuse to start when it exceeds what is free."""
    perf, cfg = ctx.config.performance, ctx.config.distill
    if not perf.memory_check:
        return None
    teacher = ctx.teacher
    estimate = estimate_memory(model_shape(ctx),
                               batch_per_rank=cfg.batch_size // (cfg.grad_accum * parallel.world),
                               dtype=autocast_dtype(ctx.config.dtype, parallel.device), strategy=parallel.strategy,
                               world=parallel.world,
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

"""`dimo run`: distil the teacher into a one-step student; resumes from out_dir's checkpoints."""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm
import torch

from .attention import set_attention_backend
from .checkpoint import save_json
from .context import Context, check_teacher_logits
from .distributed import Parallel
from .engine import DiMOEngine, autocast_dtype
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .memory import ModelShape, estimate_memory, format_bytes, free_memory, peak_memory, reset_peak
from .run_folder import (STUDENT_FILE, Checkpoints, JsonLog, StopAgreement, StopSignals, command_line, fingerprint,
                         fingerprint_hash, interrupted, move_aside, prepare_out_dir, remove_partial_files, resume_point,
                         run_folder_lock)
from .student import save_student


def build_engine(ctx: Context, parallel: Parallel | None = None) -> DiMOEngine:
    cfg = ctx.config
    conditions = ctx.conditions if cfg.conditions.name else None
    divergence = ctx.build("divergences", cfg.distill.divergence, "distill.divergence")
    init = ctx.build("init_strategies", cfg.distill.init, "distill.init")
    return DiMOEngine(ctx.teacher, conditions, divergence, init, cfg.distill, seed=cfg.seed, dtype=cfg.dtype,
                      parallel=parallel,
                      cuda_graph=cfg.performance.cuda_graph and not cfg.performance.compile)


# what `dimo run` writes into out_dir; resume=false moves these aside
RUN_FILES = ("checkpoints", "train_log.jsonl", STUDENT_FILE, "run.config.yaml", "memory.json")


def distill(ctx: Context, progress: bool = True) -> Path | None:
    """``dimo run``: distil the teacher into a one-step student; resumes from out_dir's checkpoints.
    Returns the student's path, or None when the run had already finished.

    Under torchrun every process runs this; rank 0 alone writes files (see distributed.py) and holds
    the run folder's lock."""
    parallel = Parallel.start(ctx.config)
    try:
        with ExitStack() as hold:
            parallel.on_main(lambda: hold.enter_context(run_folder_lock(ctx.out_dir, command_line())), "lock out_dir")
            signals = hold.enter_context(StopSignals())
            return _distill(ctx, parallel, progress and parallel.is_main, signals)
    finally:
        parallel.stop()


def _distill(ctx: Context, parallel: Parallel, progress: bool, signals: StopSignals) -> Path | None:
    cfg = ctx.config.distill
    ctx.device = parallel.device  # under torchrun: this process's GPU
    memory_at_start = peak_memory(parallel.device)  # CPU: the resident set of Python and torch before the models
    set_attention_backend(ctx.config.performance.attention)
    out = ctx.out_dir
    checkpoints = Checkpoints(out / "checkpoints", cfg.keep_checkpoints)
    parallel.on_main(lambda: remove_partial_files(out, checkpoints.root), "remove partial files")
    keys = fingerprint(ctx.config, "distill")
    if ctx.config.resume is False:
        moved = parallel.on_main(lambda: move_aside(out, RUN_FILES), "move the previous run aside")
        if moved:
            print(f"resume=false: the previous run was moved to {moved}", flush=True)
    last_dir, last_meta, changed = resume_point(checkpoints, ctx.config.resume, keys)
    if last_meta and last_meta["step"] >= cfg.steps:
        if parallel.is_main:
            print(f"run already finished at step {last_meta['step']} (distill.steps={cfg.steps}); its student is "
                  f"{out / STUDENT_FILE}: raise distill.steps to train further, or resume=false to start over", flush=True)
        return None
    parallel.on_main(lambda: prepare_out_dir(ctx, "run"), "prepare out_dir")
    torch.manual_seed(ctx.seed)  # the same teacher on every rank, even one initialised at random
    check_teacher_logits(ctx.teacher, ctx.conditions if ctx.config.conditions.name else None, parallel.device)
    estimate = check_memory(ctx, parallel)
    engine = build_engine(ctx, parallel)
    if last_dir:
        tensors, meta = checkpoints.load(last_dir)
        engine.load_state(tensors, meta, str(last_dir))
        del tensors
        if parallel.is_main:
            print(f"resuming from step {engine.step} of {cfg.steps} ({last_dir})", flush=True)
    log = JsonLog(out / "train_log.jsonl", engine.step) if parallel.is_main else None
    if log and ctx.config.log.tensorboard:
        from .tracking import TensorBoardLog
        log = TensorBoardLog(log, out / "tensorboard")
    if changed and log:
        log.write({"step": engine.step, "resume": "force", "changed": changed})
    bar = tqdm(total=cfg.steps, initial=engine.step, desc="distil", disable=not progress, dynamic_ncols=True)
    reset_peak(parallel.device)
    stop = StopAgreement(parallel.world)
    try:
        while engine.step < cfg.steps:
            logs = engine.train_step()  # device values: read on logging and checkpoint steps only
            bar.update(1)
            logging = engine.step % cfg.log_every == 0 or engine.step == cfg.steps
            checkpoint = engine.step % cfg.ckpt_every == 0 or engine.step == cfg.steps
            signum = stop.signal(signals.received)  # SIGINT/SIGTERM: a checkpoint now, then stop
            if logging or checkpoint or signum:
                new_skips = engine.check_finite()  # non-finite batches since the last check (raise: stops here)
                if logging or new_skips:
                    write_log(log, bar, engine, logs, new_skips)
            if checkpoint or signum:
                last_dir = save_checkpoint(engine, checkpoints, out, ctx, keys) or last_dir
            if signum:
                log and log.write({"step": engine.step, "skipped": engine.skipped, "interrupted": signal_name(signum)})
                raise interrupted(signum, engine.step, last_dir)
    except NonFiniteLossError as e:
        log and log.write({"step": engine.nonfinite_step, "skipped": engine.skipped, "stopped": str(e)})
        where = f"the last good checkpoint is {last_dir}" if last_dir else "no checkpoint was written yet"
        raise NonFiniteLossError(f"{e}; {where}") from None
    finally:
        bar.close()
        stop.finish()
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


def signal_name(signum: int) -> str:
    import signal
    return signal.Signals(signum).name


def save_checkpoint(engine: DiMOEngine, checkpoints: "Checkpoints", out: Path, ctx: Context,
                    keys: dict) -> Path | None:
    """Every rank gathers (FSDP shards); rank 0 writes the step folder and the student. ``keys``: the
    run's fingerprint, which a resume compares with its own."""
    tensors, meta = engine.state()
    meta = {**meta, "fingerprint": keys, "fingerprint_sha256": fingerprint_hash(keys)}
    student = engine.student_state_dict()

    def write():
        return checkpoints.save(engine.step, tensors, meta, alongside=lambda: save_student(
            out / STUDENT_FILE, student, engine, ctx, fingerprint_hash(keys)))
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

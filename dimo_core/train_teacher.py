"""`dimo train-teacher`: the MDM loss (eq. 3) on the plugin's dataset."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import load_optimizer_state, optimizer_state, save_tensors
from .conditions import where_conditions
from .context import Context, check_teacher_logits, check_tokens
from .engine import lr_factor, masked_cross_entropy
from .errors import NonFiniteLossError
from .masking import mask_ratio, mask_tokens
from .run_folder import (TEACHER_FILE, Checkpoints, JsonLog, StopSignals, command_line, fingerprint, fingerprint_hash,
                         interrupted, move_aside, one_process, prepare_out_dir, remove_partial_files, resume_point,
                         run_folder_lock)
from .student import teacher_spec


# what `dimo train-teacher` writes into out_dir; resume=false moves these aside
TEACHER_RUN_FILES = ("teacher_checkpoints", "teacher_log.jsonl", TEACHER_FILE, "train_teacher.config.yaml")


def train_teacher(ctx: Context, progress: bool = True) -> Path | None:
    """``dimo train-teacher``: the MDM loss (eq. 3) on the plugin's dataset. Returns the teacher's path,
    or None when the training had already finished."""
    one_process("train-teacher")
    with run_folder_lock(ctx.out_dir, command_line()), StopSignals() as signals:
        return _train_teacher(ctx, progress, signals)


def _train_teacher(ctx: Context, progress: bool, signals: StopSignals) -> Path | None:
    cfg = ctx.config.train_teacher
    out = ctx.out_dir
    # a fresh teacher, or the one to fine-tune: the preset's `teacher.path` is what we are replacing
    ctx.config.teacher = ctx.config.teacher.model_copy(update={"path": cfg.init_from})
    checkpoints = Checkpoints(out / "teacher_checkpoints")
    remove_partial_files(out, checkpoints.root)
    keys = fingerprint(ctx.config, "train_teacher")
    if ctx.config.resume is False and (moved := move_aside(out, TEACHER_RUN_FILES)):
        print(f"resume=false: the previous training was moved to {moved}", flush=True)
    last_dir, last_meta, changed = resume_point(checkpoints, ctx.config.resume, keys)
    if last_meta and last_meta["step"] >= cfg.steps:
        print(f"teacher training already finished at step {last_meta['step']} (train_teacher.steps={cfg.steps}); "
              f"its teacher is {out / TEACHER_FILE}: raise train_teacher.steps to train further, or resume=false to "
              f"start over", flush=True)
        return None
    prepare_out_dir(ctx, "train_teacher")
    model = ctx.teacher.train().requires_grad_(True)
    data, conditions = ctx.dataset, (ctx.conditions if ctx.config.conditions.name else None)
    check_teacher_logits(model, conditions, ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    rng = torch.Generator(ctx.device).manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    step = 0
    if last_dir:
        tensors, meta = checkpoints.load(last_dir)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_state(opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
        rng.set_state(tensors["rng.engine"])
        torch.set_rng_state(tensors["rng.torch"])
        step = meta["step"]
        print(f"resuming from step {step} of {cfg.steps} ({last_dir})", flush=True)
    log = JsonLog(out / "teacher_log.jsonl", step)
    if changed:
        log.write({"step": step, "resume": "force", "changed": changed})
    bar = tqdm(total=cfg.steps, initial=step, desc="train teacher", disable=not progress, dynamic_ncols=True)
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        tokens, cond = data.sample(cfg.batch_size, rng)
        tokens = tokens.to(ctx.device)
        check_tokens(tokens, model.vocab_size, model.mask_id, f"dataset {ctx.config.dataset.name!r} at step {step}")
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
        received = signals.received  # read once: a signal may arrive while the checkpoint is written
        if step % cfg.ckpt_every == 0 or step == cfg.steps or received:
            opt_tensors, groups = optimizer_state(opt, "opt")
            tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors,
                       "rng.engine": rng.get_state(), "rng.torch": torch.get_rng_state()}
            folder = checkpoints.save(step, tensors, {"step": step, "opt": groups, "fingerprint": keys,
                                                      "fingerprint_sha256": fingerprint_hash(keys)})
        if received:
            bar.close()
            raise interrupted(received, step, folder)
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

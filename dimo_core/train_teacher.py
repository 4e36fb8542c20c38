"""`dimo train-teacher`: the MDM loss (eq. 3) on the plugin's dataset."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import load_optimizer_state, optimizer_state, save_tensors
from .conditions import where_conditions
from .context import Context
from .engine import lr_factor, masked_cross_entropy
from .errors import NonFiniteLossError
from .masking import mask_ratio, mask_tokens
from .run_folder import TEACHER_FILE, Checkpoints, JsonLog, one_process, prepare_out_dir
from .student import teacher_spec


def train_teacher(ctx: Context, progress: bool = True) -> Path:
    """``dimo train-teacher``: the MDM loss (eq. 3) on the plugin's dataset."""
    cfg = ctx.config.train_teacher
    one_process("train-teacher")
    out = prepare_out_dir(ctx, "train_teacher")
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
        load_optimizer_state(opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
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
            opt_tensors, groups = optimizer_state(opt, "opt")
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

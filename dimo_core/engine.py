"""The Di[M]O engine: one ``train_step`` is one iteration of Algorithm 1 of the paper.

Three copies of one architecture: the frozen teacher phi, the generator theta (the student) and
the auxiliary model psi that tracks the generator's distribution on masked samples.

A step never reads a device value back to the host: losses and the non-finite flags stay on the
device, a non-finite batch is skipped by the optimisers themselves (fused Adam's ``found_inf``),
and the host reads them only when asked (``read_logs``, ``check_finite``, ``skipped``: logging
steps and checkpoints). No step draws from torch's global RNG except dropout (``train_mode``).
"""
from __future__ import annotations

import copy
import fnmatch
import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditions import index_conditions
from .counter_rng import key_lanes, row_uniforms, stream_key
from .config import DistillConfig
from .distributed import Parallel, as_local_scalar, unwrap
from .checkpoint import load_optimizer_state, optimizer_state
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .masking import random_positions, sample_masked, schedule_progress
from .sampling import guided_logits, sample_categorical_from_uniforms, suppress_mask_column, unguided_weight
from .stages import schedule_r_init, stage_input, training_stages

# why a batch was skipped, by the code the device keeps (first non-finite value of the step)
NONFINITE_WHAT = {1: "generator loss", 2: "generator gradient norm", 3: "aux loss", 4: "aux gradient norm"}
ANOTHER_PROCESS = 5


def lr_factor(step: int, warmup_steps: int, steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``steps``
    (``min_lr_ratio`` = 1: constant after warm-up, as the Di[M]O release)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(dtype: str, device: torch.device | str) -> str:
    """``dtype=auto``: bfloat16 autocast on CUDA (fp32 master weights, fp32 losses), float32 elsewhere."""
    if dtype == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return dtype


def surrogate_generator_loss(gen_logits: Tensor, g: Tensor, masked: Tensor, normalize: str) -> Tensor:
    """sum_i <stopgrad(g_i), z_theta_i(x_init)> / N: its gradient w.r.t. the generator's logits is g / N.

    normalize="batch": N = B (the release); "masked": N = B * L_M per sample (the paper's 1/L_M)."""
    per_position = (g.detach() * gen_logits.float()).sum(-1)            # (B, L); zero where unmasked
    if normalize == "batch":
        return per_position.sum() / gen_logits.shape[0]
    return (per_position.sum(1) / masked.sum(1).clamp_min(1)).mean()


def masked_cross_entropy(logits: Tensor, targets: Tensor, positions: Tensor, mask_id: int,
                         label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over ``positions`` (eq. 3), smoothing spread over the codes only."""
    logp = F.log_softmax(suppress_mask_column(logits.float(), mask_id), -1)
    nll = -logp.gather(-1, targets[..., None])[..., 0]
    if label_smoothing:
        codes = torch.ones(logp.shape[-1], device=logp.device)
        if mask_id < logp.shape[-1]:
            codes[mask_id] = 0  # never smear probability onto the mask id
        smooth = -(logp * codes).sum(-1) / codes.sum()
        nll = (1 - label_smoothing) * nll + label_smoothing * smooth
    return (nll * positions).sum() / positions.sum().clamp_min(1)


def name_matches(name: str, pattern: str) -> bool:
    """fnmatch, with ``|`` between alternatives: one pattern can name a module under several
    spellings (with or without a LoRA wrapper's prefix, two architectures' names)."""
    return any(fnmatch.fnmatch(name, alternative) for alternative in pattern.split("|"))


def freeze(model: nn.Module, patterns: list[str]) -> None:
    """requires_grad=False for parameters whose names match any pattern (``name_matches``)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        hits = [n for n in names if name_matches(n, pattern)]
        if not hits:
            raise ConfigError(f"distill.frozen pattern {pattern!r} matches no parameter; parameter names look like: "
                              f"{', '.join(names[:6])}")
        for n, p in model.named_parameters():
            if n in hits:
                p.requires_grad_(False)


def trainable_copy(teacher: nn.Module, cfg: DistillConfig, share_frozen: bool = True) -> nn.Module:
    """A copy of the teacher to train: the generator or the aux model, distill.frozen kept frozen.

    ``share_frozen``: the parameters the copy never trains (distill.frozen, a LoRA teacher's base
    weights) are the teacher's own tensors, not copies, so teacher, generator and aux hold one
    frozen base between them (an 8B LoRA run: one base plus three sets of adapters)."""
    shared = {id(p): p for p in frozen_in_copies(teacher, cfg.frozen)} if share_frozen else {}
    model = copy.deepcopy(teacher, memo=shared).requires_grad_(True).train(cfg.train_mode)
    freeze(model, cfg.frozen)
    return model


def frozen_in_copies(teacher: nn.Module, patterns: list[str]) -> list[nn.Parameter]:
    """The teacher's parameters that a trainable copy keeps frozen: what requires_grad_(True) leaves
    frozen (a LoRA teacher trains its adapters only) and what distill.frozen names."""
    flags = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(True)   # what the copy is asked; read which parameters it leaves frozen
    frozen = [p for n, p in teacher.named_parameters()
              if not p.requires_grad or any(name_matches(n, pattern) for pattern in patterns)]
    for p, flag in zip(teacher.parameters(), flags):
        p.requires_grad_(flag)
    return frozen


def stored_keys(model: nn.Module) -> set[str]:
    """State-dict keys a checkpoint keeps: trainable parameters and buffers. Frozen parameters are
    the teacher's own and are rebuilt from it, so a LoRA run on an 8B teacher saves its adapters,
    not three copies of the base model."""
    module = unwrap(model)
    frozen = {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return set(module.state_dict()) - frozen


class EMA:
    """Exponential moving average of the generator, rate ramped as min(rate, (1+s)/(10+s))."""

    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.shadow = {n: p.detach().clone().float() for n, p in unwrap(model).named_parameters() if p.requires_grad}

    def weight(self, step: int) -> float:
        """1 - decay at ``step``: how far the shadow moves towards the weights."""
        return 1 - min(self.rate, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, keep: Tensor | None = None, weight: Tensor | None = None) -> None:
        """``keep``: a device flag, 0 when the step was skipped (the shadow then stays as it is);
        ``weight``: ``self.weight(step)`` as a device scalar (a captured CUDA graph reads it there)."""
        decay = 1 - self.weight(step) if weight is None else None
        params = dict(unwrap(model).named_parameters())
        names = list(self.shadow)
        shadow = [self.shadow[n] for n in names]
        if keep is None:
            torch._foreach_lerp_(shadow, [params[n].detach().float() for n in names], 1 - decay)
            return
        # shadow += (1 - decay) * keep * (param - shadow): a device weight, never read on the host
        step = torch._foreach_sub([params[n].detach().float() for n in names], shadow)
        torch._foreach_mul_(step, ((1 - decay) if weight is None else weight) * keep)
        torch._foreach_add_(shadow, step)

    def state_dict_of(self, model: nn.Module) -> dict[str, Tensor]:
        state = unwrap(model).state_dict()
        return {k: self.shadow[k].to(v.dtype) if k in self.shadow else v for k, v in state.items()}


class DiMOEngine:
    def __init__(self, teacher: nn.Module, conditions, divergence, init_strategy, cfg: DistillConfig, *,
                 seed: int = 0, dtype: str = "float32", parallel: Parallel | None = None, cuda_graph: bool = False):
        self.cfg, self.conditions, self.divergence, self.init_strategy = cfg, conditions, divergence, init_strategy
        self.parallel = parallel = parallel or Parallel()   # one process unless torchrun started several
        self.mask_id, self.vocab_size, self.seq_len = teacher.mask_id, teacher.vocab_size, teacher.seq_len
        self.device = next(teacher.parameters()).device
        teacher = teacher.eval().requires_grad_(False)
        # each copy wrapped (DDP, FSDP) as soon as it exists: FSDP never holds three full copies at once
        share = parallel.strategy != "fsdp"   # FSDP shards each model's parameters in place: no sharing
        self.generator = parallel.wrap(trainable_copy(teacher, cfg, share))   # theta <- phi
        self.aux = parallel.wrap(trainable_copy(teacher, cfg, share))         # psi <- phi
        self.teacher = parallel.wrap(teacher, trainable=False)        # no gradients ever; FSDP may shard it
        # fused: one kernel per update, and it skips a flagged (non-finite) update on the device
        self.stages = training_stages(cfg.student_steps)   # (k, j) per micro-batch, in turn
        # one CUDA graph replays the whole step: one launch instead of a thousand kernels from Python
        # (a small model's step is launch-bound). Needs one process and the same stages every step.
        self.graphed = (cuda_graph and self.device.type == "cuda" and parallel.world == 1
                        and len(set(self.stages)) == 1)
        # capturable: the update reads its step count and learning rate from the device
        adam = dict(betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=True, capturable=self.graphed)
        lr = (lambda v: torch.tensor(float(v), device=self.device)) if self.graphed else float
        self.opt_generator = torch.optim.Adam(self._trainable(self.generator), lr=lr(cfg.lr_generator), **adam)
        self.opt_aux = torch.optim.Adam(self._trainable(self.aux), lr=lr(cfg.lr_aux), **adam)
        self.ema = EMA(self.generator, cfg.ema) if cfg.ema > 0 else None
        self.seed = seed
        self.rng = torch.Generator(self.device).manual_seed(seed)   # x_init, conditions, masks: the same on every rank
        # the generator's embedding noise: per rank (not split-invariant), saved per rank in checkpoints
        self.noise_rng = torch.Generator(self.device).manual_seed(stream_key(seed, parallel.rank, 0x4E01))
        if cfg.train_mode:
            torch.manual_seed(seed + parallel.rank)   # dropout reads torch's global stream: distinct per rank
        self.dtype = autocast_dtype(dtype, self.device)
        # a captured graph must not keep autocast's cast cache across replays
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.graphed)
                         if self.dtype == "bfloat16" else nullcontext())
        self.step = 0
        self.r_init = schedule_r_init(init_strategy) if cfg.student_steps != [1] else None
        self._draws = 0  # categorical draws made in this step: part of each draw's counter key
        zero = torch.zeros((), device=self.device)
        self._skipped = zero.long()            # batches skipped so far (device; exact when read)
        self._reported = 0                     # skipped batches already reported by check_finite
        self.nonfinite_step = -1               # the step of the first of them
        self._first_bad = zero.new_full((3,), -1.0, dtype=torch.float64)  # (step, what, value) since the last check
        self._last_skipped = zero.bool()      # whether the last step was skipped (device)
        self.last_skip = ""   # why the first batch skipped since the last check was (distill.nonfinite=skip)
        # what a step takes from the host, in device buffers refilled before each step (in place,
        # so that a captured graph reads this step's values): the step, the EMA weight, the keys
        # of the step's categorical draws
        self._step_value = zero.double()
        self._ema_weight = zero.clone()
        self._max_draws = cfg.grad_accum * (1 + cfg.aux_updates) * max(k for k, _ in self.stages)
        self._keys = torch.zeros((self._max_draws, 4), dtype=torch.long, device=self.device)
        self._warmup_steps = 3        # eager steps before the capture
        self._graph = None            # the captured step (CUDA), its logs
        self._graph_logs: dict[str, Tensor] = {}
        self.graph_note = ""          # why the step runs eagerly on CUDA, if it does

    # ---- Algorithm 1 -------------------------------------------------------------------------
    def train_step(self) -> dict[str, Tensor]:
        """One iteration; the logs are device scalars (``read_logs`` turns them into numbers)."""
        self._load_step_inputs()
        if self._graph is not None:
            self._graph.replay()
            logs = self._graph_logs
        elif self.graphed and not self._warmup_steps:
            logs = self._capture()
        elif self.graphed:   # eager steps on a side stream before capture (optimiser state, workspaces)
            self._warmup_steps -= 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                logs = self._iteration()
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            logs = self._iteration()
        self.step += 1
        return logs

    def _iteration(self) -> dict[str, Tensor]:
        cfg = self.cfg
        micro = cfg.batch_size // cfg.grad_accum
        self._draws = 0
        zero = torch.zeros((), device=self.device)
        logs, drawn = {"div": zero, "gen_loss": zero, "aux_loss": zero}, []
        bad = zero.bool()   # a non-finite value met in this step (this process)
        for i in self.parallel.micro_batches(cfg.grad_accum, self.generator):  # generator update (lines 1-6)
            x_init, cond = self.draw_inputs(micro, self.stage(i))                # 1. x_init (stage j's input), c
            gen_logits = self.logits(self.generator, x_init, cond, cfg.sigma)    # 2. z_theta(x_init, c)
            x_theta = self.draw_tokens(gen_logits.detach())                      #    x_theta ~ p_theta
            x_t, masked = self.mask(x_theta)                                     # 3. x~_t
            with torch.no_grad():                                                # 4. teacher (guided), aux
                teacher_logits = self.teacher_logits(x_t, cond)
                aux_logits = self.logits(self.aux, x_t, cond)
            g = self.divergence.grad(teacher_logits, aux_logits) * masked[..., None]   # 5. dD/dz_psi
            loss = surrogate_generator_loss(gen_logits, g, masked, cfg.normalize)    # 6. <sg(g), z_theta>
            bad = self._note_nonfinite(loss, 1, bad)
            self._backward(loss / cfg.grad_accum)
            with torch.no_grad():
                div = self.divergence.value(teacher_logits, aux_logits)
                logs["div"] = logs["div"] + (div * masked).sum() / masked.sum() / cfg.grad_accum
                logs["gen_loss"] = logs["gen_loss"] + loss.detach() / cfg.grad_accum
            drawn.append((x_theta, cond))
        skip_generator = self._every_rank_skips(bad := self._note_nonfinite(
            self._clip(self.generator, cfg.grad_clip, logs, "gen_grad_norm"), 2, bad))
        self._update(self.opt_generator, skip_generator)
        if self.ema is not None:
            self.ema.update(self.generator, self.step, keep=(~skip_generator).float(), weight=self._ema_weight)
        for k in range(cfg.aux_updates):                                 # 7. aux update (eq. 3)
            for j in self.parallel.micro_batches(cfg.grad_accum, self.aux):
                x_theta, cond = drawn[j] if (cfg.aux_samples == "reuse" and k == 0) else \
                    self.generator_samples(micro, self.stage(j))
                x_t, masked = self.mask(x_theta)
                aux_loss = masked_cross_entropy(self.logits(self.aux, x_t, cond), x_theta, masked,
                                                self.mask_id, cfg.label_smoothing)
                bad = self._note_nonfinite(aux_loss, 3, bad)
                self._backward(aux_loss / cfg.grad_accum, mean_over=masked)
                logs["aux_loss"] = logs["aux_loss"] + aux_loss.detach() / (cfg.grad_accum * cfg.aux_updates)
            bad = self._note_nonfinite(self._clip(self.aux, cfg.aux_grad_clip), 4, bad)
            self._update(self.opt_aux, self._every_rank_skips(bad))
        self._count_skip(self._every_rank_skips(bad), bad)
        return logs

    # ---- one CUDA graph per step -----------------------------------------------------------------
    def _load_step_inputs(self) -> None:
        """The step's host-side values into their device buffers, in place, without a host sync."""
        keys = torch.tensor([key_lanes(stream_key(self.seed, self.step, d)) for d in range(self._max_draws)])
        if self.device.type == "cuda":
            keys = keys.pin_memory()   # an asynchronous copy: the host does not wait for the device
        self._keys.copy_(keys, non_blocking=True)
        self._step_value.fill_(self.step)
        if self.ema is not None:
            self._ema_weight.fill_(self.ema.weight(self.step))
        self._set_learning_rates()

    def _capture(self) -> dict[str, Tensor]:
        """Capture one iteration as a CUDA graph and replay it for this step; where capture fails
        (a plug-in that reads a value back, an unsupported op), say why and keep running eagerly."""
        graph = torch.cuda.CUDAGraph()
        for generator in (self.rng, self.noise_rng):   # their draws advance at every replay
            graph.register_generator_state(generator)
        saved = (self.rng.get_state(), self.noise_rng.get_state())
        self.opt_generator.zero_grad(set_to_none=True)
        self.opt_aux.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph):
                logs = self._iteration()
        except Exception as e:   # noqa: BLE001 - any capture failure falls back to the eager step
            self.graphed = False
            self.graph_note = f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); eager steps"
            torch.cuda.synchronize(self.device)
            self.rng.set_state(saved[0])
            self.noise_rng.set_state(saved[1])
            self.opt_generator.zero_grad(set_to_none=True)
            self.opt_aux.zero_grad(set_to_none=True)
            return self._iteration()
        self._graph, self._graph_logs = graph, logs
        graph.replay()
        return logs

    # ---- the pieces ----------------------------------------------------------------------------
    # Every draw is made for the global micro-batch of n rows and cut to this process's rows, so a
    # run on N processes trains on exactly the batches of a one-process run (see distributed.py).
    def draw_inputs(self, n: int, stage: tuple[int, int] = (1, 1)):
        """x_init and conditions for a global micro-batch of ``n`` rows; this process's rows of them.
        ``stage`` (k, j) > 1: stage j's input of a k-step student, from the generator's own rollout."""
        x_init = self.init_strategy(n, self.seq_len, self.vocab_size, self.mask_id, self.rng, self.device)
        cond = self.conditions.sample(n, self.rng) if self.conditions is not None else None
        rows = self.parallel.rows(n // self.parallel.world)
        x_init, cond = x_init[rows], index_conditions(cond, rows)
        k, j = stage
        if j > 1:
            with torch.no_grad():   # backward simulation: the earlier stages are inputs, not trained through
                x_init = stage_input(lambda x: self.draw_tokens(self.logits(self.generator, x, cond, self.cfg.sigma)),
                                     self.remask, x_init, self.r_init, k, j)
        return x_init, cond

    def stage(self, micro: int) -> tuple[int, int]:
        """The (k, j) stage micro-batch ``micro`` of this step trains: a function of the step, so a
        resumed run trains the same stages."""
        return self.stages[(self.step * self.cfg.grad_accum + micro) % len(self.stages)]

    def remask(self, x: Tensor, ratio: float) -> Tensor:
        """Mask exactly round(ratio L) uniformly chosen positions per row (a k-step student's next input)."""
        n = x.shape[0] * self.parallel.world
        counts = torch.full((n,), round(x.shape[1] * ratio), device=self.rng.device)
        masked = random_positions(n, x.shape[1], counts, self.rng, x.device)[self.parallel.rows(x.shape[0])]
        return x.masked_fill(masked, self.mask_id)

    def draw_tokens(self, logits: Tensor) -> Tensor:
        """x ~ Categorical(softmax(logits / T)) by inverse CDF from counter-based uniforms keyed by
        (seed, step, draw of the step) and counted by (global row, position): a row's draw does not
        depend on how rows are split over processes, and resuming at a step resumes the stream."""
        n, length = logits.shape[:2]
        key = self._keys[self._draws]   # key_lanes(stream_key(seed, step, draw)), loaded before the step
        self._draws += 1
        u = row_uniforms(key, self.parallel.rows(n).start, n, length, n * self.parallel.world, logits.device)
        return sample_categorical_from_uniforms(logits, u, self.cfg.temperature)

    def mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mask exactly round(r(t) L) positions per row, t ~ U(0,1) (step 3)."""
        n = x.shape[0] * self.parallel.world
        shape_only = x.new_zeros(n, x.shape[1])  # sample_masked's draws depend on the shape only
        _, masked = sample_masked(shape_only, self.cfg.schedule, self.mask_id, self.rng, self.cfg.schedule_clamp)
        masked = masked[self.parallel.rows(x.shape[0])]
        return x.masked_fill(masked, self.mask_id), masked

    def logits(self, model: nn.Module, x: Tensor, cond, sigma: float = 0.0) -> Tensor:
        noise = {"generator": self.noise_rng} if sigma else {}   # teachers without noise need not take one
        with self.autocast:
            out = model(x, cond, embedding_noise=sigma, **noise)
        return suppress_mask_column(out.float(), self.mask_id)

    def teacher_logits(self, x_t: Tensor, cond) -> Tensor:
        null = self.conditions.null(cond) if cond is not None else None
        return guided_logits(lambda x, c: self.logits(self.teacher, x, c), x_t, cond, null,
                             self.guidance_weight(x_t), self.cfg.guidance_form)

    def guidance_weight(self, x_t: Tensor) -> float | Tensor:
        """The distillation guidance: constant (the release), or with ``guidance_ramp`` per row the
        weight a MaskGit sampler ramping from 0 would use at this row's mask ratio r: w at t(r)."""
        w = self.cfg.guidance
        off = unguided_weight(self.cfg.guidance_form)
        if not self.cfg.guidance_ramp or w == off:
            return w
        r = (x_t == self.mask_id).float().mean(1)
        return off + (w - off) * schedule_progress(self.cfg.schedule, r)

    @torch.no_grad()
    def generator_samples(self, n: int, stage: tuple[int, int] = (1, 1)):
        """A fresh x_init (or stage input) and condition, and the generator's sample for them (the
        release's aux data)."""
        x_init, cond = self.draw_inputs(n, stage)
        return self.draw_tokens(self.logits(self.generator, x_init, cond, self.cfg.sigma)), cond

    def _set_learning_rates(self) -> None:
        cfg = self.cfg
        factor = lr_factor(self.step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        for opt, lr in ((self.opt_generator, cfg.lr_generator), (self.opt_aux, cfg.lr_aux)):
            for group in opt.param_groups:
                if self.graphed and torch.is_tensor(group["lr"]):
                    group["lr"].fill_(lr * factor)   # in place: the captured update reads it
                elif self.graphed:                    # a float from a checkpoint's JSON
                    group["lr"] = torch.tensor(lr * factor, device=self.device)
                else:
                    group["lr"] = lr * factor

    def _backward(self, loss: Tensor, mean_over: Tensor | None = None) -> None:
        """``mean_over``: the positions ``loss`` averages; across processes the loss is reweighted so
        that the ranks' average gradient is that of the mean over all their positions."""
        if mean_over is not None and self.parallel.world > 1:
            loss = loss * self.parallel.share(mean_over.sum())
        loss.backward()

    def _clip(self, model: nn.Module, clip: float | None, logs: dict | None = None, name: str = "") -> Tensor:
        norm = as_local_scalar(torch.nn.utils.clip_grad_norm_(self._trainable(model), clip if clip else math.inf))
        if logs is not None:
            logs[name] = norm.detach()
        return norm

    def _note_nonfinite(self, value: Tensor, what: int, bad: Tensor) -> Tensor:
        """``bad`` or ``value`` non-finite; the first non-finite value since the last check is kept
        with its step and what it was (device tensors: nothing is read here)."""
        value = value.detach().double()
        now = ~torch.isfinite(value)
        first = now & ~bad & (self._first_bad[0] < 0)
        record = torch.stack([self._step_value, torch.full_like(value, what), value])
        self._first_bad.copy_(torch.where(first, record, self._first_bad))
        return bad | now

    def _every_rank_skips(self, bad: Tensor) -> Tensor:
        """True on every rank when any rank met a non-finite value: all skip, none waits for the others."""
        return self.parallel.any_rank(bad)

    def _update(self, opt, skip: Tensor) -> None:
        """One optimiser step, skipped on the device when ``skip`` (fused Adam's ``found_inf``)."""
        opt.found_inf = skip.float()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def _count_skip(self, skip: Tensor, bad_here: Tensor) -> None:
        first = skip & ~bad_here & (self._first_bad[0] < 0)   # skipped for another process's value
        record = torch.stack([self._step_value, torch.full_like(self._first_bad[0], ANOTHER_PROCESS),
                              torch.zeros_like(self._first_bad[0])])
        self._first_bad.copy_(torch.where(first, record, self._first_bad))
        self._skipped.add_(skip.long())
        self._last_skipped.copy_(skip)

    # ---- host reads: logging steps and checkpoints only --------------------------------------------
    @property
    def skipped(self) -> int:
        """Batches skipped so far (a host read)."""
        return int(self._skipped)

    def read_logs(self, logs: dict[str, Tensor]) -> dict[str, float]:
        """The step's logs as numbers, averaged over processes (a host read: logging steps only)."""
        return self.parallel.mean(logs)

    def check_finite(self) -> int:
        """How many batches were skipped since the last check (a host read: logging steps and
        checkpoints); ``last_skip`` says why the first of them was.

        distill.nonfinite=raise: NonFiniteLossError naming the first such step instead (its update
        was skipped on the device, so the weights are those from before it)."""
        skipped = self.skipped
        new = skipped - self._reported
        if not new:
            return 0
        step, what, value = self._first_bad.tolist()
        which = NONFINITE_WHAT.get(int(what))
        reason = f"{which} is {value}" if which else "a value is non-finite on another process"
        self._first_bad.fill_(-1.0)
        self._reported = skipped
        self.nonfinite_step = int(step)
        if self.cfg.nonfinite != "skip":
            clip = "distill.aux_grad_clip" if which and which.startswith("aux") else "distill.grad_clip"  # the one that applies
            raise NonFiniteLossError(f"non-finite value at step {int(step)}: {reason}; lower the learning rates or "
                                     f"set {clip} (distill.nonfinite=skip drops such batches instead)")
        self.last_skip = reason
        return new

    @staticmethod
    def _trainable(model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def safe_step(self) -> dict[str, Tensor] | None:
        """``train_step`` then ``check_finite`` (a host read): None when the batch was skipped
        (distill.nonfinite=skip); NonFiniteLossError under distill.nonfinite=raise."""
        logs = self.train_step()
        skipped = self.last_step_skipped
        self.check_finite()
        return None if skipped else logs

    @property
    def last_step_skipped(self) -> bool:
        """Whether the last step's batch was skipped (a host read)."""
        return bool(self._last_skipped)

    # ---- state -------------------------------------------------------------------------------
    # Under FSDP these gather shards (every process must call them); the full dict is on rank 0 only.
    def student_state_dict(self) -> dict[str, Tensor]:
        """The weights to sample with: the generator's EMA when enabled."""
        state = self.ema.state_dict_of(self.generator) if self.ema else unwrap(self.generator).state_dict()
        keep = stored_keys(self.generator)
        return self.parallel.full_state({k: v for k, v in state.items() if k in keep})

    @property
    def partial(self) -> bool:
        """True when checkpoints and the student hold trainable tensors only (frozen ones are the teacher's)."""
        return stored_keys(self.generator) != set(unwrap(self.generator).state_dict())

    def state(self) -> tuple[dict[str, Tensor], dict]:
        tensors = {}
        for name, model in (("generator", self.generator), ("aux", self.aux)):
            keep = stored_keys(model)
            tensors.update({f"{name}.{k}": v for k, v in unwrap(model).state_dict().items() if k in keep})
        if self.ema:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        meta = {"step": self.step, "skipped": self.skipped}
        for name, opt in (("opt_generator", self.opt_generator), ("opt_aux", self.opt_aux)):
            opt_tensors, meta[name] = optimizer_state(opt, name)
            tensors.update(opt_tensors)
        tensors["rng.engine"] = self.rng.get_state()
        # the embedding noise and torch's global stream (dropout) differ per rank: keep each rank's
        for rank, (noise, cpu, cuda) in enumerate(self.parallel.gather(self._per_rank_rng_states())):
            suffix = f".rank{rank}" if rank else ""
            tensors["rng.noise" + suffix] = noise
            tensors["rng.torch" + suffix] = cpu
            if cuda is not None:
                tensors["rng.cuda" + suffix] = cuda
        return self.parallel.full_state(tensors), meta

    def _per_rank_rng_states(self):
        return (self.noise_rng.get_state(), torch.get_rng_state(),
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)

    def load_state(self, tensors: dict[str, Tensor], meta: dict, source: str = "checkpoint") -> None:
        """Restore a checkpoint written by ``state`` on any number of processes; errors name ``source``."""
        def sub(prefix):
            return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        missing = [k for k in ("step", "skipped", "opt_generator", "opt_aux") if k not in meta]
        missing += [k for k in ("rng.engine", "rng.torch") if k not in tensors]
        if missing:
            raise CheckpointError(f"{source} is not a complete dimo run checkpoint (missing {', '.join(missing)})")
        self.parallel.load_module(self.generator, sub("generator"), f"{source} (generator)", stored_keys(self.generator))
        self.parallel.load_module(self.aux, sub("aux"), f"{source} (aux)", stored_keys(self.aux))
        if self.ema:
            params = dict(unwrap(self.generator).named_parameters())
            shadow = sub("ema")
            if set(shadow) != set(self.ema.shadow):
                raise CheckpointError(f"{source}: its EMA weights do not match the generator's trainable parameters "
                                      f"(was distill.frozen or distill.ema changed?)")
            self.ema.shadow = {k: self.parallel.shard_like(params[k], v.to(self.device).float()) for k, v in shadow.items()}
        for name, opt in (("opt_generator", self.opt_generator), ("opt_aux", self.opt_aux)):
            try:
                load_optimizer_state(opt, sub(name), meta[name], self.parallel.shard_like)
            except (ValueError, KeyError, IndexError, RuntimeError) as e:
                raise CheckpointError(f"{source}: the {name[4:]} optimizer state does not fit this model ({e}); "
                                      f"was distill.frozen changed?") from None
        self.rng.set_state(tensors["rng.engine"])
        rank = self.parallel.rank
        suffix = f".rank{rank}" if rank else ""
        if "rng.torch" + suffix in tensors:
            torch.set_rng_state(tensors["rng.torch" + suffix])
            if "rng.cuda" + suffix in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda" + suffix], self.device)
        else:  # resumed on more processes than wrote the checkpoint: a fresh stream for the new ranks
            torch.manual_seed(self.seed + rank + 1_000_003 * meta["step"])
        if "rng.noise" + suffix in tensors:
            self.noise_rng.set_state(tensors["rng.noise" + suffix])
        else:
            self.noise_rng.manual_seed(stream_key(self.seed, rank, 0x4E01, meta["step"]))
        self.step = meta["step"]
        self._skipped.fill_(meta["skipped"])
        self._reported = meta["skipped"]


"""Classifier-free guidance, categorical sampling, and the multi-step and one-step samplers."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .conditions import cat_conditions
from .errors import ConfigError
from .masking import mask_ratio, random_positions
from .protocols import Cond, LogitsFn
from .stages import stage_input

GuidanceForm = Literal["standard", "maskgit"]


def suppress_mask_column(logits: Tensor, mask_id: int) -> Tensor:
    """Make the mask id impossible to sample where it is a logit column (the release's bug)."""
    if mask_id >= logits.shape[-1]:
        return logits
    index = torch.full((1,), mask_id, device=logits.device)   # made on the device: no copy from the host
    return logits.index_fill(-1, index, torch.finfo(logits.dtype).min)


def unguided_weight(form: GuidanceForm) -> float:
    """The weight at which each guidance form gives the conditional logits."""
    return 1.0 if form == "standard" else 0.0


def guidance_is_off(w: float | Tensor, form: GuidanceForm) -> bool:
    """A per-row weight tensor counts as on: reading it would stop the device for one pass saved."""
    return not isinstance(w, Tensor) and w == unguided_weight(form)


def guided_logits(model: LogitsFn, x: Tensor, cond: Cond, null_cond: Cond, w: float | Tensor,
                  form: GuidanceForm = "standard") -> Tensor:
    """Classifier-free guidance in one pass over a doubled batch.

    standard: u + w (c - u) (w = 1: conditional);  maskgit: c + w (c - u) (w = 0: conditional).
    ``w`` is a number or a per-row tensor of shape (batch,)."""
    if isinstance(w, Tensor):
        w = w.view(-1, *([1] * (x.dim())))   # (B,) -> (B, 1, 1): broadcasts over positions and vocabulary
    if cond is None or guidance_is_off(w, form):
        return model(x, cond)
    c, u = model(torch.cat([x, x]), cat_conditions(cond, null_cond)).chunk(2)
    return u + w * (c - u) if form == "standard" else c + w * (c - u)


def sample_categorical(logits: Tensor, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
    """x ~ Categorical(softmax(logits / temperature)) per position; argmax at temperature 0.

    Inverse CDF with one float64 uniform per position (a Gumbel-max draw needs one per vocabulary
    entry, which dominated sampling time on large vocabularies). Probabilities are computed in
    float32, whose precision is relative, and summed in float64, so a token of probability 1e-12
    still owns an interval of that width; tokens of probability 0 (a suppressed mask column) own none."""
    if temperature == 0:
        return logits.argmax(-1)
    return draw_from_probs(torch.softmax(logits.float() / temperature, -1), generator)


def draw_from_probs(probs: Tensor, generator: torch.Generator) -> Tensor:
    """x ~ Categorical(probs) per position, one float64 uniform from ``generator`` per position."""
    u = torch.rand(probs.shape[:-1], generator=generator, device=generator.device, dtype=torch.float64)
    return inverse_cdf(probs, u.to(probs.device))


def sample_categorical_from_uniforms(logits: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
    """``sample_categorical`` with the uniforms given (u: logits.shape[:-1], float64 in [0, 1)),
    e.g. counter-based ones (counter_rng.py) that do not depend on how rows are split."""
    if temperature == 0:
        return logits.argmax(-1)
    return inverse_cdf(torch.softmax(logits.float() / temperature, -1), u)


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Index i with cdf[i-1] <= u * total < cdf[i]: each token's interval is half-open, so one of
    zero width is never hit, and u < 1 keeps u * total below the total."""
    cdf = probs.double().cumsum(-1)
    total = cdf[..., -1:]
    target = torch.minimum(u[..., None] * total, torch.nextafter(total, torch.zeros_like(total)))
    # the clamp only acts on non-finite probabilities (a batch the engine skips): indices stay valid
    return torch.searchsorted(cdf, target, right=True)[..., 0].clamp_max(probs.shape[-1] - 1)


def masked_after_step(schedule: str, s: int, steps: int, n_masked0: Tensor, still_masked: Tensor) -> Tensor:
    """How many positions per row stay masked after step s: the schedule at t = (s + 1) / steps
    times the initial count, none after the last step, and at least one revealed per step."""
    if s == steps - 1:
        return torch.zeros_like(n_masked0)
    r_next = mask_ratio(schedule, torch.full((), (s + 1) / steps, dtype=torch.float64))
    return torch.minimum(torch.floor(r_next * n_masked0).long(), still_masked.sum(1) - 1).clamp_min(0)


Progress = Literal["to_last_step", "to_steps"]


def step_progress(s: int, steps: int, progress: Progress = "to_last_step") -> float:
    """How far step s of ``steps`` is into the sampling, in [0, 1].

    to_last_step: s / (steps - 1), 1 at the last step (MaskGit v1.0 after its 2023-11-03 correction;
    Meissonic's linspace(2, 0, steps) noise scale); one step is step 0 (torch.linspace's convention).
    to_steps: s / steps, (steps - 1) / steps at the last step (MaskGit-pytorch before that correction)."""
    if progress == "to_steps":
        return s / steps
    return s / (steps - 1) if steps > 1 else 0.0


Counts = Literal["schedule", "maskgit_v1"]
# MaskGit v1.0's adap_sche: the share of the tokens predicted at step i of a linspace(1, 0, steps) grid r
V1_SHARES = {"root": lambda r: 1 - r ** 0.5, "linear": lambda r: 1 - r, "square": lambda r: 1 - r ** 2,
             "cosine": lambda r: torch.cos(r * math.pi * 0.5), "arccos": lambda r: torch.arccos(r) / (math.pi * 0.5)}


def maskgit_v1_counts(schedule: str, steps: int, n_masked: Tensor) -> Tensor:
    """Tokens predicted per step (rows, steps) as MaskGit v1.0's adap_sche: shares of the schedule
    at linspace(1, 0, steps), normalised to the masked count and rounded, at least 1 per step,
    the last step taking the remainder."""
    if schedule not in V1_SHARES:
        raise ConfigError(f"sampler.counts=maskgit_v1 has schedules {', '.join(V1_SHARES)}, got {schedule!r}")
    if steps == 1:
        return n_masked[:, None].long()
    share = V1_SHARES[schedule](torch.linspace(1, 0, steps))
    counts = (share / share.sum() * n_masked[:, None].float().cpu()).round()
    counts[counts == 0] = 1
    counts[:, -1] += n_masked.float().cpu() - counts.sum(1)
    return counts.long().to(n_masked.device)


class ConfidenceSampler:
    """MaskGit's sampler: at each step draw every masked token, keep the most confident ones.

    Confidence = log p(drawn token) + r_temp * Gumbel * (1 - progress). The number still masked
    after step s follows the schedule; guidance ramps linearly from unguided at step 0 to w at
    progress 1 (MaskGit) or is constant (Meissonic); the temperature is constant or annealed
    linearly to ``final_temperature``. ``progress`` is ``step_progress``: by default full guidance
    and zero noise at the last step, as MaskGit v1.0 and Meissonic's pipeline. ``counts``: how
    many tokens each step commits: "schedule" keeps floor(schedule((s + 1) / steps) * masked)
    masked after step s (Meissonic's scheduler), "maskgit_v1" commits MaskGit v1.0's adap_sche
    counts (``maskgit_v1_counts``)."""

    def __init__(self, schedule: str = "arccos", temperature: float = 1.0, final_temperature: float | None = None,
                 r_temp: float = 4.5, guidance_ramp: bool = True, guidance_form: GuidanceForm = "standard",
                 progress: Progress = "to_last_step", counts: Counts = "schedule"):
        if progress not in ("to_last_step", "to_steps"):
            raise ConfigError(f"sampler.progress must be to_last_step or to_steps, got {progress!r}")
        if counts not in ("schedule", "maskgit_v1"):
            raise ConfigError(f"sampler.counts must be schedule or maskgit_v1, got {counts!r}")
        self.counts = counts
        self.schedule, self.temperature, self.final_temperature = schedule, temperature, final_temperature
        self.r_temp, self.guidance_ramp, self.guidance_form = r_temp, guidance_ramp, guidance_form
        self.progress = progress

    def __call__(self, model, x, cond, null_cond, *, steps, guidance, mask_id, generator):
        x = x.clone()
        n_masked0 = (x == mask_id).sum(1)
        v1_counts = maskgit_v1_counts(self.schedule, steps, n_masked0) if self.counts == "maskgit_v1" else None
        for s in range(steps):
            progress = step_progress(s, steps, self.progress)
            still_masked = x == mask_id
            if not still_masked.any():
                break
            if v1_counts is None:
                keep_masked = masked_after_step(self.schedule, s, steps, n_masked0, still_masked)
            else:   # v1 clamps a step's count to what is still masked
                keep_masked = (still_masked.sum(1) - v1_counts[:, s]).clamp_min(0)
            w = self._guidance(guidance, progress)
            logits = suppress_mask_column(guided_logits(model, x, cond, null_cond, w, self.guidance_form).float(), mask_id)
            temperature = self._temperature(progress)
            log_probs = F.log_softmax(logits / max(temperature, 1e-6), -1)
            drawn = logits.argmax(-1) if temperature == 0 else draw_from_probs(log_probs.exp(), generator)
            conf = log_probs.gather(-1, drawn[..., None])[..., 0]
            if self.r_temp:
                u = torch.rand(conf.shape, generator=generator, device=generator.device, dtype=torch.float64)
                conf = conf + (self.noise_scale(progress) * -torch.log(-torch.log(u.clamp_min(1e-300)))).to(conf)
            conf = conf.masked_fill(~still_masked, -math.inf)
            n_commit = still_masked.sum(1) - keep_masked
            ranks = conf.argsort(1, descending=True).argsort(1)
            commit = (ranks < n_commit[:, None]) & still_masked
            x = torch.where(commit, drawn, x)
        return x

    def noise_scale(self, progress: float) -> float:
        """The Gumbel noise scale of the confidence: r_temp (1 - progress)."""
        return self.r_temp * (1 - progress)

    def _guidance(self, w: float, progress: float) -> float:
        """The ramp from the unguided weight at progress 0 to w at progress 1 (MaskGit: w * progress)."""
        if not self.guidance_ramp:
            return w
        off = unguided_weight(self.guidance_form)
        return off + (w - off) * progress

    def _temperature(self, progress: float) -> float:
        if self.final_temperature is None:
            return self.temperature
        return self.temperature + (self.final_temperature - self.temperature) * progress


class AncestralSampler:
    """Random-order ancestral sampling: at each step, positions to reveal are chosen uniformly."""

    def __init__(self, schedule: str = "linear", temperature: float = 1.0, guidance_form: GuidanceForm = "standard"):
        self.schedule, self.temperature, self.guidance_form = schedule, temperature, guidance_form

    def __call__(self, model, x, cond, null_cond, *, steps, guidance, mask_id, generator):
        x = x.clone()
        n_masked0 = (x == mask_id).sum(1)
        for s in range(steps):
            still_masked = x == mask_id
            if not still_masked.any():
                break
            keep_masked = masked_after_step(self.schedule, s, steps, n_masked0, still_masked)
            logits = suppress_mask_column(guided_logits(model, x, cond, null_cond, guidance, self.guidance_form).float(), mask_id)
            drawn = sample_categorical(logits, generator, self.temperature)
            # reveal a uniformly random subset of the masked positions
            scores = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
            scores = scores.masked_fill(~still_masked, 2.0)
            ranks = scores.argsort(1).argsort(1)
            commit = (ranks < (still_masked.sum(1) - keep_masked)[:, None]) & still_masked
            x = torch.where(commit, drawn, x)
        return x


@torch.no_grad()
def student_sample(model: LogitsFn, x_init: Tensor, cond: Cond, *, mask_id: int, generator: torch.Generator,
                   temperature: float = 1.0, steps: int = 1, r_init: float = 0.6) -> Tensor:
    """The student's sample at ``steps`` = k passes (one pass: every position drawn from the
    generator's logits on x_init). k > 1: the k-step schedule of dimo_core.stages, the one
    ``distill.student_steps`` trains: each stage's sample, round(L * r_init (k - j + 1) / k) random
    positions masked again, is stage j's input."""
    def draw(x):
        return sample_categorical(suppress_mask_column(model(x, cond).float(), mask_id), generator, temperature)

    def remask(x, ratio):
        counts = torch.full((x.shape[0],), round(x.shape[1] * ratio), device=x.device)
        return x.masked_fill(random_positions(x.shape[0], x.shape[1], counts, generator, x.device), mask_id)
    return draw(stage_input(draw, remask, x_init, r_init, steps, steps))

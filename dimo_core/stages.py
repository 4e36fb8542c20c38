"""k-step students: the schedule a k-step student is trained for and sampled with.

A k-step student is the generator used k times by a MaskGit-style sampler. Stage 1 reads x_init
(the init strategy's random codes, a ratio r_init of them masked). Stage j > 1 reads the student's
own stage j-1 sample with round(L * r_j) positions, chosen uniformly, masked again, where
r_j = r_init * (k - j + 1) / k falls linearly from r_init to r_init / k at the last stage. Every
stage draws every position; the last stage's draw is the sample.

In training (``distill.student_steps``), stage j's input comes from the generator's own rollout
under no_grad (backward simulation, as DMD2 trains its multi-step students) and the Di[M]O loss
applies unchanged to that stage's output. The same ``stage_input`` builds the input in training and
in ``student_sample``, so a student is sampled with exactly the schedule it was trained for.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from .errors import ConfigError

Draw = Callable[[Tensor], Tensor]            # a stage's input -> its sample (every position drawn)
Remask = Callable[[Tensor, float], Tensor]   # a sample, a ratio -> the sample with that ratio masked


def stage_ratio(r_init: float, k: int, j: int) -> float:
    """Mask ratio of stage j's input (1-based) for a k-step student: r_init (k - j + 1) / k."""
    return r_init * (k - j + 1) / k


def stage_input(draw: Draw, remask: Remask, x_init: Tensor, r_init: float, k: int, j: int) -> Tensor:
    """Stage j's input of a k-step student: stages 1..j-1 run from x_init, each sample re-masked to
    the next stage's ratio."""
    x = x_init
    for i in range(2, j + 1):
        x = remask(draw(x), stage_ratio(r_init, k, i))
    return x


def training_stages(student_steps: list[int]) -> list[tuple[int, int]]:
    """One period of the (k, j) stages the engine trains, one per micro-batch in turn: every trained k
    gets an equal share of the batches, split evenly over its k stages. Stage 1 is the same input
    (x_init) for every k; stage j > 1 costs j - 1 extra generator passes without gradient."""
    period = math.lcm(*student_steps)
    return [(k, j) for k in student_steps for j in range(1, k + 1) for _ in range(period // k)]


def schedule_r_init(init, where: str = "distill.init") -> float:
    """The r_init that the stage ratios scale: the init strategy's fixed ratio, or the middle of its
    range (drawn per batch for stage 1 only)."""
    r_init = getattr(init, "r_init", None)
    if isinstance(r_init, (tuple, list)):
        return (float(r_init[0]) + float(r_init[1])) / 2
    if r_init is None:
        raise ConfigError(f"{where}: a k-step student re-masks its samples to a ratio that scales the init's "
                          f"r_init, and this init strategy has none; use distill.init.name=random_mask or "
                          f"distill.student_steps=[1]")
    return float(r_init)

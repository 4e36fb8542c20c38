"""Token-level divergences D(p_teacher || p_aux) and their gradients with respect to the aux logits.

Closed forms for FKL, RKL and Jeffreys; any f-divergence through autograd. Inputs are logits
(..., V); the mask column, if any, has already been pushed to a very negative value.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _log_probs(teacher_logits: Tensor, aux_logits: Tensor) -> tuple[Tensor, Tensor]:
    return F.log_softmax(teacher_logits.float(), -1), F.log_softmax(aux_logits.float(), -1)


class FKL:
    """KL(p_teacher || p_aux); gradient p_aux - p_teacher (the release's choice)."""

    def value(self, teacher_logits, aux_logits):
        lp, lq = _log_probs(teacher_logits, aux_logits)
        return (lp.exp() * (lp - lq)).sum(-1)

    def grad(self, teacher_logits, aux_logits):
        lp, lq = _log_probs(teacher_logits, aux_logits)
        return lq.exp() - lp.exp()


class RKL:
    """KL(p_aux || p_teacher); gradient p_aux * (log p_aux - log p_teacher - KL)."""

    def value(self, teacher_logits, aux_logits):
        lp, lq = _log_probs(teacher_logits, aux_logits)
        return (lq.exp() * (lq - lp)).sum(-1)

    def grad(self, teacher_logits, aux_logits):
        lp, lq = _log_probs(teacher_logits, aux_logits)
        q = lq.exp()
        kl = (q * (lq - lp)).sum(-1, keepdim=True)
        return q * (lq - lp - kl)


class Jeffreys:
    """(1 - beta) * FKL + beta * RKL; beta may be negative (beta = 0 is FKL, 1 is RKL)."""

    def __init__(self, beta: float = 0.5):
        self.beta = beta
        self.fkl, self.rkl = FKL(), RKL()

    def value(self, teacher_logits, aux_logits):
        return ((1 - self.beta) * self.fkl.value(teacher_logits, aux_logits)
                + self.beta * self.rkl.value(teacher_logits, aux_logits))

    def grad(self, teacher_logits, aux_logits):
        return ((1 - self.beta) * self.fkl.grad(teacher_logits, aux_logits)
                + self.beta * self.rkl.grad(teacher_logits, aux_logits))


class FDivergence:
    """D_f(p_teacher || p_aux) = sum_x p_aux(x) f(p_teacher(x) / p_aux(x)), gradient by autograd.

    ``f_of_log_ratio`` receives log(p_teacher / p_aux) (finite, clamped) and returns f of the ratio;
    taking the log ratio keeps f numerically stable where one of the two probabilities is tiny."""

    def __init__(self, f_of_log_ratio: Callable[[Tensor], Tensor], clamp: float = 30.0):
        self.f = f_of_log_ratio
        self.clamp = clamp

    def value(self, teacher_logits, aux_logits):
        lp, lq = _log_probs(teacher_logits, aux_logits)
        return (lq.exp() * self.f((lp - lq).clamp(-self.clamp, self.clamp))).sum(-1)

    def grad(self, teacher_logits, aux_logits):
        with torch.enable_grad():
            aux = aux_logits.detach().float().requires_grad_(True)
            value = self.value(teacher_logits.detach(), aux).sum()
            (g,) = torch.autograd.grad(value, aux)
        return g


def _js_f(log_u: Tensor) -> Tensor:
    # f(u) = (u log u - (1 + u) log((1 + u) / 2)) / 2, with u = exp(log_u)
    u = log_u.exp()
    return 0.5 * (u * log_u - (1 + u) * (torch.log1p(u) - math.log(2)))


def _tv_f(log_u: Tensor) -> Tensor:
    return 0.5 * (log_u.exp() - 1).abs()


def _kl_f(log_u: Tensor) -> Tensor:      # f(u) = u log u: D_f = FKL
    return log_u.exp() * log_u


def _reverse_kl_f(log_u: Tensor) -> Tensor:  # f(u) = -log u: D_f = RKL
    return -log_u


F_GENERATORS = {"js": _js_f, "tv": _tv_f, "kl": _kl_f, "reverse_kl": _reverse_kl_f}


def f_divergence(kind: str) -> FDivergence:
    try:
        return FDivergence(F_GENERATORS[kind])
    except KeyError:
        raise ValueError(f"unknown f-divergence {kind!r}; choose one of {sorted(F_GENERATORS)}") from None

"""Row-wise operations on opaque condition batches (None, a tensor, or a dict of them)."""
from __future__ import annotations

import torch
from torch import Tensor

from .protocols import Cond


def cat_conditions(a: Cond, b: Cond) -> Cond:
    if a is None:
        return None
    if isinstance(a, dict):
        return {k: cat_conditions(a[k], b[k]) for k in a}
    return torch.cat([a, b], dim=0)


def index_conditions(cond: Cond, index) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: index_conditions(v, index) for k, v in cond.items()}
    return cond[index]


def where_conditions(keep: Tensor, cond: Cond, other: Cond) -> Cond:
    """Row i from ``cond`` where keep[i] else from ``other`` (condition dropout for guidance)."""
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: where_conditions(keep, cond[k], other[k]) for k in cond}
    shape = (-1,) + (1,) * (cond.dim() - 1)
    return torch.where(keep.view(shape).to(cond.device), cond, other)


def conditions_to(cond: Cond, device) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return {k: conditions_to(v, device) for k, v in cond.items()}
    return cond.to(device)


def conditions_len(cond: Cond) -> int | None:
    if cond is None:
        return None
    if isinstance(cond, dict):
        return conditions_len(next(iter(cond.values())))
    return cond.shape[0]

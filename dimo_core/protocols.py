"""What a plugin provides. The engine sees tokens, logits and opaque condition batches only.

Shapes: B batch, L sequence length (the positions the student generates), V logit columns.
A condition batch (``Cond``) is ``None``, a tensor, or a dict of tensors, batch first; the core
only concatenates, indexes and selects rows of it (see ``dimo_core.conditions``).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Cond = Any  # None | Tensor | dict[str, Cond]


@runtime_checkable
class Teacher(Protocol):
    """A masked diffusion model, also the architecture of generator and aux (deep copies).

    Must be a ``torch.nn.Module``. ``forward(tokens, cond, embedding_noise, generator)`` maps
    tokens (B, L) with values in [0, vocab_size) or ``mask_id`` to logits (B, L, vocab_size). If
    ``mask_id`` is a logit column the core never samples it. ``embedding_noise`` is sigma of the
    generator's Gaussian perturbation of token embeddings: apply
    ``dimo_core.perturb_embeddings(e, sigma, generator)`` to the embeddings of the L generated
    tokens (not to condition tokens). The noise draws from ``generator`` (a ``torch.Generator``
    the core passes: the engine's per-process noise stream in training, the sampling batch's
    generator in ``dimo sample``/``eval``), never from torch's global stream.
    """

    vocab_size: int
    mask_id: int
    seq_len: int

    def forward(self, tokens: Tensor, cond: Cond, embedding_noise: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Tokenizer(Protocol):
    """Maps data (images, text) to token ids and back. ``vocab_size`` must equal the teacher's;
    ``mask_id`` is None for tokenizers without a mask token (VQ codebooks)."""

    vocab_size: int
    mask_id: int | None

    def encode(self, data: Any) -> Tensor: ...

    def decode(self, tokens: Tensor) -> Any: ...


@runtime_checkable
class Conditions(Protocol):
    """Conditions for data-free distillation and evaluation, and their null form for guidance."""

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Cond:
        """n conditions (random class labels, prompts drawn from a file, ...)."""

    def null(self, cond: Cond) -> Cond:
        """The unconditional (null class, negative prompt, masked prompt) batch for ``cond``."""

    # Optional: ``from_text(texts: list[str]) -> Cond`` lets users write conditions as text
    # (``dimo sample prompt="a sneaker"``): prompts, or class names.


@runtime_checkable
class Dataset(Protocol):
    """Real data for ``dimo train-teacher``."""

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> tuple[Tensor, Cond]:
        """n random (tokens (n, L), cond) pairs."""


@runtime_checkable
class Divergence(Protocol):
    """A token-level divergence D(p_teacher || p_aux) between categorical distributions."""

    def value(self, teacher_logits: Tensor, aux_logits: Tensor) -> Tensor:
        """Per-position divergence, shape (...)."""

    def grad(self, teacher_logits: Tensor, aux_logits: Tensor) -> Tensor:
        """Gradient of ``value`` with respect to the aux logits, shape (..., V)."""


@runtime_checkable
class InitStrategy(Protocol):
    """The initial distribution of x_init (section 4.3 of the paper)."""

    def __call__(self, batch_size: int, seq_len: int, vocab_size: int, mask_id: int,
                 generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor: ...


class LogitsFn(Protocol):
    def __call__(self, tokens: Tensor, cond: Cond) -> Tensor: ...


@runtime_checkable
class Sampler(Protocol):
    """A multi-step sampler. ``x`` holds the starting tokens (masks where to generate)."""

    def __call__(self, model: LogitsFn, x: Tensor, cond: Cond, null_cond: Cond, *, steps: int,
                 guidance: float, mask_id: int, generator: torch.Generator) -> Tensor: ...


@runtime_checkable
class Metric(Protocol):
    """Scores a batch of generated tokens (with the conditions they were drawn for)."""

    def __call__(self, tokens: Tensor, cond: Cond) -> dict[str, float]: ...


@runtime_checkable
class Writer(Protocol):
    """Saves samples for people to look at: ``rows`` maps a label ("teacher 8 steps",
    "student") to tokens drawn for the same conditions. Returns the paths written."""

    def __call__(self, rows: dict[str, Tensor], cond: Cond, out_dir: str) -> list[str]: ...

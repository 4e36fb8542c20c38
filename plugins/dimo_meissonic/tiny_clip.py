"""A tiny CLIP for the bundled Fashion-MNIST teacher: the text encoder Meissonic reads, pretrained.

Meissonic reads a frozen CLIP text encoder that was trained (contrastively, against images) on far
more text than Meissonic's own captions, so it maps a prompt it never saw to features near those of
prompts that mean the same thing. A random frozen encoder does not: the first bundled teacher, trained
on 8 caption templates with one, drew the class named by a held-out template 72% of the time at 16
steps (96.5% with training templates; FD 5.10 against 2.54). This module pretrains the small CLIP
text model the way CLIP is trained (symmetric InfoNCE between caption and image embeddings, learned
temperature) against a small image encoder that is then discarded, as Meissonic discards CLIP's
vision tower.

Captions come from the training templates only (the evaluation templates are never seen), with
each template word dropped with probability ``p_drop``, so the encoder learns that the class noun
carries the meaning wherever it stands rather than to recognise particular templates.
``p_insert`` > 0 also inserts 1-3 vocabulary words (class nouns excluded); it is off by default: a
teacher trained on such an encoder scored FD 2.21 against 1.85 at 16 steps (README.md).
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditions import CLASS_PHRASES, TRAIN_TEMPLATES, caption_words


class ImageTower(nn.Module):
    """28 x 28 grey image -> embedding (CLIP's vision side at toy size; discarded after training)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                                 nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.Flatten(), nn.Linear(64 * 16, dim))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1)


def class_words() -> set[str]:
    return {w for phrase in CLASS_PHRASES for w in re.findall(r"[a-z]+", phrase)} - {"a", "an", "pair", "of"}


def distractor_words() -> list[str]:
    """Vocabulary words that name no class: what ``p_insert`` may add to a caption."""
    nouns = class_words()
    return [w for w in caption_words() if w.isalpha() and w not in nouns]


def perturbed_caption(label: int, rng: torch.Generator, distractors: list[str], p_insert: float,
                      p_drop: float) -> str:
    """A training-template caption of the class, with template words dropped and vocabulary words inserted."""
    template = TRAIN_TEMPLATES[int(torch.randint(len(TRAIN_TEMPLATES), (1,), generator=rng))]
    before, after = (part.split() for part in template.split("{}"))
    keep = lambda words: [w for w in words if float(torch.rand((), generator=rng)) >= p_drop]
    words = keep(before) + [CLASS_PHRASES[label]] + keep(after)
    if float(torch.rand((), generator=rng)) < p_insert:
        for _ in range(int(torch.randint(1, 4, (1,), generator=rng))):
            word = distractors[int(torch.randint(len(distractors), (1,), generator=rng))]
            words.insert(int(torch.randint(len(words) + 1, (1,), generator=rng)), word)
    return " ".join(words)


def train_text_encoder(encoder, tokenizer, images: Tensor, labels: Tensor, steps: int = 1000,
                       batch_size: int = 256, lr: float = 1e-3, p_insert: float = 0.0, p_drop: float = 0.2,
                       seed: int = 0, max_length: int = 16, log=print) -> list[dict]:
    """CLIP's contrastive loss on (image, perturbed caption) pairs; trains ``encoder`` in place."""
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    distractors = distractor_words()
    tower = ImageTower(encoder.config.projection_dim)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
    params = list(encoder.parameters()) + list(tower.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    encoder.train()
    history = []
    for step in range(1, steps + 1):
        for group in opt.param_groups:  # linear warm-up over 100 steps, then cosine to 0
            group["lr"] = lr * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(images), (batch_size,), generator=rng)
        captions = [perturbed_caption(int(y), rng, distractors, p_insert, p_drop) for y in labels[idx]]
        ids = tokenizer(captions, padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt").input_ids
        text = F.normalize(encoder(ids).text_embeds, dim=-1)
        image = F.normalize(tower(images[idx]), dim=-1)
        logits = logit_scale.clamp(max=math.log(100)).exp() * text @ image.T
        target = torch.arange(batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            history.append({"step": step, "loss": loss.item()})
            log(f"tiny CLIP step {step}: contrastive loss {loss.item():.3f}")
    encoder.eval().requires_grad_(False)
    return history

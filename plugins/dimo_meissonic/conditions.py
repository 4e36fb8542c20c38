"""Prompt conditions: text prompts encoded once by the frozen CLIP text model into condition dicts.

A condition batch is a dict of tensors, batch first:
``context`` (B, T, D), ``pooled`` (B, P), ``micro_conds`` (B, 5) = [W, H, crop_x, crop_y, aesthetic],
``label`` (B,) the class named in the prompt (-1: none) and ``prompt_id`` (B,) the row of
``prompts`` (-1: the negative prompt). The null condition (classifier-free guidance, condition
dropout) is the negative prompt's embedding, as Meissonic's pipeline and the Di[M]O release use.

- ``CaptionConditions``: Fashion-MNIST captions written from the class names with several templates;
  the "eval" split uses templates never seen in training (and cycles the classes 0..9).
- ``PromptFileConditions``: prompts read from text files, one per line (real text-to-image runs).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dimo_core.errors import ConfigError

# Fashion-MNIST classes as noun phrases (article included), in label order
CLASS_PHRASES = ("a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat",
                 "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot")
TRAIN_TEMPLATES = ("{}", "a photo of {}", "a picture of {}", "{}, centered", "a black and white photo of {}",
                   "a product photo of {}", "a grey image of {}", "a small photo of {}")
EVAL_TEMPLATES = ("an image of {}", "a low resolution photo of {}", "{} on a black background")
EVAL_SPLITS = ("eval", "test")


def caption_words() -> list[str]:
    """Every word (as CLIP pre-tokenizes: letters, or runs of punctuation) of every caption."""
    import re
    text = " ".join(t.format(p) for t in TRAIN_TEMPLATES + EVAL_TEMPLATES for p in CLASS_PHRASES)
    return sorted(set(re.findall(r"[a-z]+|[^\sa-z0-9]+", text.lower())))


class PromptConditions:
    """Shared machinery: a prompt table, its (cached) embeddings, the negative prompt."""

    def __init__(self, encoder, prompts: list[str], labels: list[int], negative_prompt: str = "",
                 micro_conds: tuple[float, ...] = (1024, 1024, 0, 0, 6), cache: bool = False):
        if len(micro_conds) != 5:
            raise ConfigError(f"micro_conds must be [W, H, crop_x, crop_y, aesthetic], got {list(micro_conds)}")
        self.encoder, self.prompts = encoder, list(prompts)
        self.negative_prompt = negative_prompt
        self.device = encoder.device
        self.labels = torch.tensor(labels, dtype=torch.long, device=self.device)  # on the device: no copy per batch
        self.micro_conds = torch.tensor(micro_conds, dtype=torch.float32, device=self.device)
        self.negative = encoder([negative_prompt])
        self.table = encoder(self.prompts) if cache else None  # small prompt sets: encode once

    def embeddings(self, prompt_ids: Tensor) -> dict[str, Tensor]:
        if self.table is not None:
            return {k: v[prompt_ids.to(v.device)] for k, v in self.table.items()}
        return self.encoder([self.prompts[i] for i in prompt_ids.tolist()])

    def batch(self, prompt_ids: Tensor) -> dict[str, Tensor]:
        prompt_ids = prompt_ids.to(self.device)
        return {**self.embeddings(prompt_ids), "micro_conds": self.micro_conds.expand(len(prompt_ids), -1).clone(),
                "label": self.labels[prompt_ids], "prompt_id": prompt_ids}

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        n = cond["pooled"].shape[0]
        return {"context": self.negative["context"].expand(n, -1, -1).to(cond["context"]),
                "pooled": self.negative["pooled"].expand(n, -1).to(cond["pooled"]),
                "micro_conds": cond["micro_conds"].clone(),
                "label": torch.full_like(cond["label"], -1), "prompt_id": torch.full_like(cond["prompt_id"], -1)}

    def from_text(self, texts: list[str]) -> dict[str, Tensor]:
        """Prompts typed by the user (``dimo sample prompt="..."``), appended to the prompt table."""
        start = len(self.prompts)
        self.prompts += texts
        self.labels = torch.cat([self.labels, torch.tensor([self.label_of(t) for t in texts], dtype=torch.long,
                                                           device=self.device)])
        if self.table is not None:
            new = self.encoder(texts)
            self.table = {k: torch.cat([v, new[k].to(v)]) for k, v in self.table.items()}
        return self.batch(torch.arange(start, len(self.prompts)))

    def label_of(self, text: str) -> int:
        """The class a prompt names (-1: none known)."""
        return -1

    def text(self, prompt_ids: Tensor) -> list[str]:
        return [self.prompts[i] if i >= 0 else self.negative_prompt for i in prompt_ids.tolist()]


class CaptionConditions(PromptConditions):
    """Captions of Fashion-MNIST classes: ``sample`` draws a class and a template (training or
    held-out evaluation templates) and returns the encoded prompt with its class label."""

    def __init__(self, encoder, negative_prompt: str = "", micro_conds: tuple[float, ...] = (28, 28, 0, 0, 6)):
        self.num_classes = len(CLASS_PHRASES)
        templates = TRAIN_TEMPLATES + EVAL_TEMPLATES
        # prompt id = template index * num_classes + label; training templates first
        prompts = [t.format(phrase) for t in templates for phrase in CLASS_PHRASES]
        super().__init__(encoder, prompts, list(range(self.num_classes)) * len(templates), negative_prompt,
                         micro_conds, cache=True)
        ids = torch.arange(len(prompts), device=self.device).view(len(templates), self.num_classes).T  # (label, template)
        self.ids = {"train": ids[:, :len(TRAIN_TEMPLATES)], "eval": ids[:, len(TRAIN_TEMPLATES):]}

    def label_of(self, text: str) -> int:
        """The class whose phrase (without its article) the prompt contains; the longest wins."""
        nouns = [p.split(" ", 1)[1].removeprefix("pair of ") for p in CLASS_PHRASES]
        found = [(len(noun), i) for i, noun in enumerate(nouns) if noun in text.lower()]
        return max(found)[1] if found else -1

    def for_labels(self, labels: Tensor, generator: torch.Generator, split: str = "train") -> dict[str, Tensor]:
        """A caption for each class label, the template drawn uniformly from the split's templates."""
        table = self.ids["eval" if split in EVAL_SPLITS else "train"]
        pick = torch.randint(0, table.shape[1], (len(labels),), generator=generator, device=generator.device)
        return self.batch(table[labels.to(table.device), pick.to(table.device)])  # no read back to the host

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> dict[str, Tensor]:
        if split in EVAL_SPLITS:  # every class equally often, in order (grid columns show each class)
            labels = torch.arange(n) % self.num_classes
        else:
            labels = torch.randint(0, self.num_classes, (n,), generator=generator, device=generator.device)
        return self.for_labels(labels, generator, split)


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt file {path} does not exist (one prompt per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompt file {path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          f"save it as UTF-8, one prompt per line") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {path} holds no prompts")
    return prompts


class PromptFileConditions(PromptConditions):
    """Prompts from text files (one per line). Training draws prompts uniformly from ``train_file``;
    the eval split takes ``eval_file`` in order (so reports use the same prompts every time)."""

    def __init__(self, encoder, train_file: str, eval_file: str | None = None, negative_prompt: str = "",
                 micro_conds: tuple[float, ...] = (1024, 1024, 0, 0, 6)):
        train = read_prompt_file(train_file)
        evaluation = read_prompt_file(eval_file) if eval_file else train
        self.n_train = len(train)
        super().__init__(encoder, train + evaluation, [-1] * (len(train) + len(evaluation)), negative_prompt,
                         micro_conds, cache=False)
        self.n_eval = len(evaluation)

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> dict[str, Tensor]:
        if split in EVAL_SPLITS:
            ids = self.n_train + torch.arange(n) % self.n_eval
        else:
            ids = torch.randint(0, self.n_train, (n,), generator=generator, device=generator.device).cpu()
        return self.batch(ids)

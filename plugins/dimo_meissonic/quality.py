"""How well samples follow their prompts, and a picture of them.

``PromptAlignment``: the maskgit plugin's Fashion-MNIST image metrics (FD in the committed CNN's
features, IS analogue, precision/recall/density/coverage) plus ``prompt_alignment``, the CNN's
accuracy at recovering the class named in each prompt (rows without a class, label -1, are left out).
``PromptGrid``: maskgit's image grid with the prompt text as the column titles.
"""
from __future__ import annotations

import textwrap

import torch
from dimo_maskgit.metrics import ImageQuality
from dimo_maskgit.writer import ImageGrid
from torch import Tensor


class PromptAlignment:
    def __init__(self, tokenizer, classifier: str | None = None, root: str | None = None, batch_size: int = 500):
        self.quality = ImageQuality(tokenizer, classifier, root=root, batch_size=batch_size)

    def __call__(self, tokens: Tensor, cond: dict[str, Tensor]) -> dict[str, float]:
        labels = cond["label"].cpu()
        named = labels >= 0
        if bool(named.all()):
            out = self.quality(tokens, labels)
            out["prompt_alignment"] = out.pop("class_accuracy")
            return out
        out = self.quality(tokens, None)
        if bool(named.any()):  # a mix: score the rows that name a class
            subset = self.quality(tokens[named.to(tokens.device)], labels[named])
            out["prompt_alignment"] = subset["class_accuracy"]
        return out


class PromptGrid(ImageGrid):
    """Writer protocol: rows = samplers, one column per prompt, titled with the prompt's text."""

    def __init__(self, tokenizer, prompt_text, filename: str = "samples.png", max_columns: int = 10,
                 wrap: int = 16):
        super().__init__(tokenizer, None, filename, max_columns, cell_inches=1.1)
        self.prompt_text, self.wrap, self.titles = prompt_text, wrap, []

    def column_title(self, column: int) -> str:
        return self.titles[column]

    def __call__(self, rows: dict[str, Tensor], cond: dict[str, Tensor], out_dir: str) -> list[str]:
        self.titles = [textwrap.fill(t, self.wrap) for t in self.prompt_text(cond["prompt_id"].cpu())]
        return super().__call__(rows, torch.arange(len(self.titles)), out_dir)  # columns titled by index

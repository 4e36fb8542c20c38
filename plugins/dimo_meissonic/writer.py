"""``PromptGrid``: the bench's image grid with the prompt text as the column titles."""
from __future__ import annotations

import textwrap

import torch
from dimo_fmnist.grid import ImageGrid
from torch import Tensor


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

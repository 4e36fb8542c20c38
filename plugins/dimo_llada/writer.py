"""The ``text_examples`` writer: prompts and responses side by side, in Markdown."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .metrics import prompt_rows
from .tokenizer import HFTokenizer


class TextExamples:
    """``text_examples`` writer: a Markdown file with the prompt and every row's response, per example."""

    def __init__(self, tokenizer: HFTokenizer, n: int = 8, filename: str = "text_examples.md"):
        self.tokenizer, self.n, self.filename = tokenizer, n, filename

    def __call__(self, rows: dict[str, Tensor], cond, out_dir: str) -> list[str]:
        batch = min(len(t) for t in rows.values())
        prompts = prompt_rows(cond, batch)
        decoded = {label: self.tokenizer.decode(t[:self.n].cpu()) for label, t in rows.items()}
        lines = ["# Generated responses", "",
                 f"{min(self.n, batch)} prompts; each response decoded with special tokens kept "
                 f"([EOS], [MASK] mid-response are the model's own output).", ""]
        for i in range(min(self.n, batch)):
            prompt = self.tokenizer.hf.decode(prompts[i], skip_special_tokens=False) if prompts[i] else "(none)"
            lines += [f"## Example {i + 1}", "", "```text", f"prompt: {clean(prompt)}"]
            lines += [f"{label}: {clean(texts[i])}" for label, texts in decoded.items()]
            lines += ["```", ""]
        path = Path(out_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
        return [str(path)]


def clean(text: str) -> str:
    """One line, and no fence that would close the code block."""
    return " ".join(text.split()).replace("```", "'''")

"""The toy's writer: samples.md, one line per sample with its class."""
from __future__ import annotations

from pathlib import Path


class TextWriter:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows, cond, out_dir):
        lines = ["# Toy samples (class: sequence)", ""]
        for label, tokens in rows.items():
            lines += [f"## {label}", ""] + [f"    class {int(c)}: {s}" for c, s in
                                            zip(cond.tolist(), self.tokenizer.decode(tokens))] + [""]
        path = Path(out_dir) / "samples.md"
        path.write_text("\n".join(lines))
        return [str(path)]

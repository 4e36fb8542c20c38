"""A PNG grid of decoded samples: one row per sampler ("teacher 1 step", ..., "student"),
one column per condition (the same class in every row of a column)."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .metrics import decode_batches


class ImageGrid:
    """Writer protocol. ``class_names`` titles the columns (None: "class 3")."""

    def __init__(self, tokenizer, class_names: tuple[str, ...] | None = None, filename: str = "samples.png",
                 max_columns: int = 16, cell_inches: float = 0.9):
        self.tokenizer, self.class_names, self.filename = tokenizer, class_names, filename
        self.max_columns, self.cell_inches = max_columns, cell_inches

    def column_title(self, label: int) -> str:
        if self.class_names and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return f"class {label}"

    def __call__(self, rows: dict[str, Tensor], cond: Tensor | None, out_dir: str) -> list[str]:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not rows:
            return []
        n = min(len(t) for t in rows.values())
        blocks = -(-n // self.max_columns)  # more samples than columns: further blocks of rows below, none dropped
        columns = -(-n // blocks)            # blocks of equal width (20 samples, 16 columns: two blocks of 10)
        title_lines = max((self.column_title(int(cond[c])).count("\n") + 1 for c in range(n)), default=1) \
            if cond is not None else 0
        cell_height = self.cell_inches + 0.14 * title_lines  # room for the column titles of each block
        fig, axes = plt.subplots(len(rows) * blocks, columns, squeeze=False,
                                 figsize=(self.cell_inches * columns + 1.6, cell_height * len(rows) * blocks + 0.4))
        for r, (label, tokens) in enumerate(rows.items()):
            images = decode_batches(self.tokenizer, tokens[:n], columns).clamp(0, 1)
            for i in range(blocks * columns):
                ax = axes[(i // columns) * len(rows) + r][i % columns]
                ax.set_xticks([])
                ax.set_yticks([])
                if i >= n:
                    ax.set_axis_off()
                    continue
                picture = images[i].permute(1, 2, 0)
                ax.imshow((picture[..., 0] if picture.shape[-1] == 1 else picture).numpy(), cmap="gray", vmin=0, vmax=1)
                if i % columns == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
                if r == 0 and cond is not None:
                    ax.set_title(self.column_title(int(cond[i])), fontsize=7)
        fig.tight_layout(pad=0.2)
        path = Path(out_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [str(path)]

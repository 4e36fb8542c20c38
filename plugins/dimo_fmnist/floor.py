"""The image metrics of real Fashion-MNIST training images, raw and through a patch tokenizer: the
floor that any generator of that tokenizer's codes is measured against.

    python -m dimo_fmnist.floor                                    # the bundled 256-code tokenizer
    python -m dimo_fmnist.floor --tokenizer path/to/patch_vq.safetensors --samples 2000 --draws 4

Each draw takes ``samples / 10`` training images per class (the class balance of ``dimo eval``'s
conditional rows) and scores them exactly as a sample is scored: FD of the evaluation CNN's features
against the test-split reference, precision/recall/density/coverage against real test images,
class accuracy. Training images never enter the reference, so this is what a perfect model of the
training data would score at this sample size (FD is biased upward at small sizes).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from .fashion_mnist import load_split
from .metrics import ImageQuality
from .patch_vq import BUNDLED, PatchVQTokenizer


class _Identity:
    """A 'tokenizer' whose codes are the pictures themselves, so ImageQuality scores pictures."""

    def decode(self, images):
        return images


def balanced_draw(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` random images of every class, class by class."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks)


def floor(tokenizer_path=BUNDLED, samples: int = 2000, draws: int = 4, root: str | None = None) -> dict:
    """{'tokenized': [metrics per draw], 'raw': [metrics per draw]} of real training images."""
    images, labels = load_split("train", root)
    tokenizer = PatchVQTokenizer.load(tokenizer_path)
    score = ImageQuality(_Identity(), root=root)  # one metric over pictures: raw, or encoded and decoded
    per_class = samples // len(labels.unique())
    out = {"tokenized": [], "raw": []}
    for seed in range(draws):
        pick = balanced_draw(labels, per_class, seed)
        out["tokenized"].append(score(tokenizer.decode(tokenizer.encode(images[pick])), labels[pick]))
        out["raw"].append(score(images[pick], labels[pick]))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dimo_fmnist.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(BUNDLED), help="patch VQ .safetensors file")
    parser.add_argument("--samples", type=int, default=2000, help="images per draw (a multiple of 10)")
    parser.add_argument("--draws", type=int, default=4, help="independent draws (seeds 0, 1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = floor(args.tokenizer, args.samples, args.draws)
    for kind, rows in result.items():
        print(f"real training images, {kind}, {args.samples} per draw:")
        for name in rows[0]:
            values = [r[name] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"  {name:16s} mean {statistics.mean(values):.3f}  sd {spread:.3f}  "
                  f"({' / '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()

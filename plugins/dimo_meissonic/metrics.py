"""How well samples follow their prompts.

``PromptAlignment``: the Fashion-MNIST bench's image metrics (FD in the committed CNN's
features, IS analogue, precision/recall/density/coverage) plus ``prompt_alignment``, the CNN's
accuracy at recovering the class named in each prompt (rows without a class, label -1, are left out).
"""
from __future__ import annotations

from dimo_fmnist.metrics import ImageQuality
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

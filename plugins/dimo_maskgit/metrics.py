"""``image_quality`` with ``features="inception"``: a GPU user with torch-fidelity and its Inception
weights gets the standard ``fid_inception`` against a reference-statistics .npz (``mu``, ``sigma``, as
published with ADM's ImageNet reference batches) and ``is_inception``. The Fashion-MNIST CNN path is
the bench's (``dimo_fmnist.metrics.ImageQuality``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dimo_core.errors import ConfigError
from dimo_fmnist.classifier import mean_and_cov
from dimo_fmnist.metrics import frechet_distance, inception_score


class InceptionQuality:
    """FID and IS with torch-fidelity's Inception-v3 (TF-compatible weights), for real teachers."""

    def __init__(self, tokenizer, reference: str | None, batch_size: int = 100, device="cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise ConfigError("image_quality with features=inception needs torch-fidelity and its Inception "
                              "weights (pip install torch-fidelity; the weights download on first use); "
                              "use features=fmnist_cnn otherwise") from None
        if reference is None or not Path(reference).is_file():
            raise ConfigError(f"image_quality features=inception needs inception_reference=PATH.npz with the "
                              f"reference 'mu' and 'sigma' (got {reference!r})")
        ref = np.load(reference, allow_pickle=False)
        self.ref_mean, self.ref_cov = torch.from_numpy(ref["mu"]), torch.from_numpy(ref["sigma"])
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).to(device)
        self.tokenizer, self.batch_size = tokenizer, batch_size

    @torch.no_grad()
    def __call__(self, tokens: Tensor, cond: Tensor | None) -> dict[str, float]:
        device = next(self.net.parameters()).device
        feats, logits = [], []
        for i in range(0, len(tokens), self.batch_size):
            images = self.tokenizer.decode(tokens[i:i + self.batch_size]).float().clamp(0, 1)
            if images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            f, lg = self.net((images * 255).round().to(torch.uint8).to(device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        mean, cov = mean_and_cov(torch.cat(feats))
        return {"fid_inception": frechet_distance(mean, cov, self.ref_mean, self.ref_cov),
                "is_inception": inception_score(torch.cat(logits).softmax(1))}

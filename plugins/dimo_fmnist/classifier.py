"""The evaluation network for Fashion-MNIST samples: a small CNN trained on the real training split.

It plays the part Inception-v3 plays for ImageNet: its penultimate features (global average pool,
128 values) give a Frechet distance, precision/recall/density/coverage; its class probabilities
give an Inception-Score analogue and the accuracy of conditional samples. The committed file holds
the weights (``net.*``) and the reference statistics of the real test split (``reference.*``),
so the distance is always computed against the statistics of the network that ships with it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dimo_core.checkpoint import load_state_dict_strict, load_tensors, save_tensors
from dimo_core.errors import CheckpointError

BUNDLED = Path(__file__).parent / "assets" / "fmnist_cnn.safetensors"
FEATURE_NAME = "fmnist_cnn"  # metric names say which network measured them (never "FID")


class FashionCNN(nn.Module):
    """28 x 28 grey image in [0, 1] -> (features (B, 128), logits (B, 10))."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 128):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:  # batch norm: trains in a few epochs on CPU
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(1, width), nn.MaxPool2d(2),                                    # 14 x 14
            *conv(width, 2 * width), *conv(2 * width, 2 * width), nn.MaxPool2d(2),  # 7 x 7
            *conv(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(images * 2 - 1)  # centre the input; [0, 1] images in
        return features, self.head(self.dropout(features))


@torch.no_grad()
def features_and_probs(net: FashionCNN, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Penultimate features (float64) and class probabilities of ``images`` (eval mode)."""
    net.eval()
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        f, logits = net(images[start:start + batch_size].float())
        feats.append(f.double())
        probs.append(logits.double().softmax(-1))
    return torch.cat(feats), torch.cat(probs)


def mean_and_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.T @ centred / (len(features) - 1)


def train_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], epochs: int = 5,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0, log=print) -> tuple[FashionCNN, dict]:
    """Adam with a cosine learning rate, light augmentation (random shifts of up to 2 pixels)."""
    torch.manual_seed(seed)
    images, labels = train
    net = FashionCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=g)
        total = 0.0
        for i in range(0, len(images), batch_size):
            idx = order[i:i + batch_size]
            x = random_shift(images[idx], 2, g)
            loss = F.cross_entropy(net(x)[1], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = accuracy(net, *test)
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(images):.4f}, test accuracy {acc:.4f}, "
            f"{time.time() - start:.0f} s")
    return net, {"test_accuracy": acc, "epochs": epochs, "train_seconds": round(time.time() - start)}


def random_shift(images: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): cheap, label-preserving."""
    padded = F.pad(images, [max_shift] * 4)
    size = images.shape[-1]
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=g).tolist()  # one shift per batch
    return padded[..., dy:dy + size, dx:dx + size]


def accuracy(net: FashionCNN, images: Tensor, labels: Tensor) -> float:
    _, probs = features_and_probs(net, images)
    return (probs.argmax(-1) == labels).double().mean().item()


def save_classifier(path: str | Path, net: FashionCNN, reference_features: Tensor, metadata: dict) -> None:
    mean, cov = mean_and_cov(reference_features)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({"reference.mean": mean, "reference.cov": cov})
    save_tensors(path, tensors, {**metadata, "reference_count": len(reference_features)})


def load_classifier(path: str | Path = BUNDLED) -> tuple[FashionCNN, Tensor, Tensor, dict]:
    """(network in eval mode, reference mean (D,), reference covariance (D, D), metadata)."""
    tensors, meta = load_tensors(path)
    if "reference.mean" not in tensors or "reference.cov" not in tensors:
        raise CheckpointError(f"{path} lacks reference.mean / reference.cov; rebuild it with "
                              f"`python -m dimo_fmnist.build_assets classifier`")
    net = FashionCNN()
    load_state_dict_strict(net, {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, str(path))
    return net.eval(), tensors["reference.mean"].double(), tensors["reference.cov"].double(), meta

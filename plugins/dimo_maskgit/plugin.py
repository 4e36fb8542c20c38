"""Registers the maskgit plugin: the MaskGit teacher, its tokenizers, class-label conditions,
Fashion-MNIST tokens, image-quality metrics, an image-grid writer, and two presets."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import dimo_core
from dimo_core.conditions import ClassLabels
from dimo_core.presets import load_preset

from dimo_fmnist import patch_vq
from dimo_fmnist.data import FashionMNISTTokens
from dimo_fmnist.fashion_mnist import CLASS_NAMES
from dimo_fmnist.grid import ImageGrid
from dimo_fmnist.metrics import ImageQuality

from .metrics import InceptionQuality
from .teacher import build_teacher
from .vqgan import load_vqgan

PRESETS = Path(__file__).parent / "presets"


def _device(ctx):
    return getattr(ctx, "device", "cpu")


ClassNames = Literal["fashion_mnist"] | list[str] | None


def _class_names(option: ClassNames) -> tuple[str, ...] | None:
    """The `class_names` option of conditions and writer: "fashion_mnist", a list, or None."""
    names = CLASS_NAMES if option == "fashion_mnist" else option
    return tuple(names) if names else None


@dimo_core.hookimpl
def register_teachers(register):
    def maskgit(ctx, path: str | None = None, hidden: int = 768, depth: int = 24, heads: int = 16,
                mlp: int = 3072, codebook_size: int = 1024, num_classes: int = 1000, tokens: int = 256,
                dropout: float = 0.1):
        """valeoai MaskGit v1.0 transformer; path: .pth (model_state_dict) or .safetensors; None = random init.
        Defaults are the released ImageNet 256 model."""
        return build_teacher(path, hidden=hidden, depth=depth, heads=heads, mlp=mlp, codebook_size=codebook_size,
                             num_classes=num_classes, tokens=tokens, dropout=dropout)
    register("maskgit", maskgit)


@dimo_core.hookimpl
def register_tokenizers(register):
    def fmnist_patch_vq(ctx, path: str | None = None):
        """4 x 4 patch VQ of Fashion-MNIST (49 codes of 256); images (B, 1, 28, 28) in [0, 1]."""
        return patch_vq.PatchVQTokenizer.load(path or patch_vq.BUNDLED)
    register("fmnist_patch_vq", fmnist_patch_vq)

    def vqgan(ctx, path: str):
        """taming VQGAN folder: model.yaml + last.ckpt (flat, or configs/ + ckpts/); images in [0, 1]."""
        return load_vqgan(path).to(_device(ctx))
    register("vqgan", vqgan)


@dimo_core.hookimpl
def register_conditions(register):
    def class_labels(ctx, num_classes: int = 10, class_names: ClassNames = None):
        """Class labels; class_names lets `dimo sample prompt=sneaker` name a class (indices always work)."""
        return ClassLabels(num_classes, _class_names(class_names))
    register("class_labels", class_labels)


@dimo_core.hookimpl
def register_datasets(register):
    def fashion_mnist(ctx, root: str | None = None):
        """Fashion-MNIST (Debian package dataset-fashion-mnist) encoded by the configured tokenizer."""
        return FashionMNISTTokens(ctx.tokenizer, root)
    register("fashion_mnist", fashion_mnist)


@dimo_core.hookimpl
def register_metrics(register):
    def image_quality(ctx, features: Literal["fmnist_cnn", "inception"] = "fmnist_cnn",
                      classifier: str | None = None, k: int = 5, real_samples: int | None = None,
                      inception_reference: str | None = None, root: str | None = None, batch_size: int = 500):
        """features: fmnist_cnn (committed CNN; root = Fashion-MNIST folder of the real test split)
        or inception (torch-fidelity; inception_reference = .npz with mu, sigma)."""
        if features == "inception":
            return InceptionQuality(ctx.tokenizer, inception_reference, min(batch_size, 100), _device(ctx))
        return ImageQuality(ctx.tokenizer, classifier, k, real_samples, root, batch_size)
    register("image_quality", image_quality)


@dimo_core.hookimpl
def register_writers(register):
    def image_grid(ctx, class_names: ClassNames = None, filename: str = "samples.png"):
        return ImageGrid(ctx.tokenizer, _class_names(class_names), filename)
    register("image_grid", image_grid)


@dimo_core.hookimpl
def register_exporters(register):
    from .export import MaskGitV1Exporter
    # valeoai v1.0's checkpoint: FOLDER/current.pth, read by its --resume --vit-folder FOLDER/
    register("maskgit_pth", lambda ctx: MaskGitV1Exporter(), teachers=["maskgit"], default=True)


@dimo_core.hookimpl
def register_presets(register):
    register("maskgit", load_preset(PRESETS / "maskgit.yaml"))
    register("maskgit_imagenet256", load_preset(PRESETS / "maskgit_imagenet256.yaml"))

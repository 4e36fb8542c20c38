"""The maskgit plug-in through the core (PluginContract), its presets, and the Inception path."""
import sys
import types

import numpy as np
import pytest
import torch

from dimo_core.config import load_config
from dimo_core.errors import ConfigError
from dimo_fmnist.classifier import mean_and_cov
from dimo_fmnist.fashion_mnist import CLASS_NAMES, default_root
from dimo_fmnist.metrics import ImageQuality
from dimo_fmnist.patch_vq import PatchVQTokenizer
from dimo_fmnist.testing import random_fashion_mnist
from dimo_core.conditions import ClassLabels
from dimo_core.registry import registry_with
from dimo_core.testing import PluginContract
from dimo_maskgit.metrics import InceptionQuality
from dimo_maskgit import plugin


class TestMaskGitPlugin(PluginContract):
    name = "maskgit"
    module = plugin
    registers = {"teachers": ["maskgit"], "tokenizers": ["fmnist_patch_vq", "vqgan"], "conditions": ["class_labels"],
                 "datasets": ["fashion_mnist"], "metrics": ["image_quality"], "writers": ["image_grid"],
                 "presets": ["maskgit", "maskgit_imagenet256"]}
    tiny = ["teacher.hidden=16", "teacher.depth=1", "teacher.heads=2", "teacher.mlp=32"]

    def end_to_end_overrides(self, tmp_path):
        """Fake Fashion-MNIST in the Debian layout; real features from its test split (test speed)."""
        data = random_fashion_mnist(tmp_path / "fmnist")
        return [f"dataset.root={data}", f"eval.metrics=[{{name: image_quality, root: {data}}}]"]

    def check_report(self, report, out_dir):
        for row in report["rows"]:
            metrics = row["metrics"]
            assert {"fd_fmnist_cnn", "is_fmnist_cnn", "class_accuracy"} <= set(metrics)
            assert metrics["fd_fmnist_cnn"] >= 0 and 1 <= metrics["is_fmnist_cnn"] <= 10
        assert (out_dir / "samples.png").is_file()


def test_class_labels_option_names_the_fashion_mnist_classes():
    """`class_names: fashion_mnist` lets `dimo sample prompt=sneaker` name a class."""
    conditions = TestMaskGitPlugin().context([]).conditions
    assert isinstance(conditions, ClassLabels) and conditions.class_names == CLASS_NAMES
    assert conditions.from_text(["Sneaker", "3", "ankle boot"]).tolist() == [7, 3, 9]
    with pytest.raises(ConfigError, match="names no class; give an index 0..9 or one of: t-shirt/top"):
        conditions.from_text(["cat"])


def test_plugin_registers_everything_and_presets_validate():
    registry = registry_with("maskgit", plugin)
    expected = {"teachers": "maskgit", "tokenizers": "fmnist_patch_vq", "conditions": "class_labels",
                "datasets": "fashion_mnist", "metrics": "image_quality", "writers": "image_grid"}
    for kind, name in expected.items():
        assert name in registry.names(kind)
    assert "vqgan" in registry.names("tokenizers")
    for preset in ("maskgit", "maskgit_imagenet256"):
        config = load_config([f"preset={preset}"], registry)
        assert config.teacher.name == "maskgit" and config.distill.init.r_init == 0.6
    imagenet = load_config(["preset=maskgit_imagenet256"], registry)
    assert (imagenet.distill.guidance, imagenet.distill.sigma, imagenet.distill.lr_generator,
            imagenet.distill.ema, imagenet.distill.frozen) == (2.0, 0.1, 1e-5, 0.9999,
                                                                ["tok_emb.weight", "bias", "pos_emb"])


def test_inception_path_needs_torch_fidelity(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install torch-fidelity"):
        InceptionQuality(PatchVQTokenizer(torch.rand(8, 16)), str(tmp_path / "ref.npz"))


class StandInInception(torch.nn.Module):
    """Plays torch-fidelity's extractor: uint8 RGB in, (features, logits) out."""

    def __init__(self, name, features_list):
        super().__init__()
        assert features_list == ["2048", "logits_unbiased"]
        self.project = torch.nn.Linear(3 * 28 * 28, 6)

    def forward(self, images):
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        features = self.project(images.flatten(1).float() / 255)
        return features, features[:, :4]


def test_inception_path_computes_fid_and_is(monkeypatch, tmp_path):
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = StandInInception
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    tok = PatchVQTokenizer(torch.rand(8, 16))
    codes = torch.randint(0, 8, (64, 49), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # reference statistics: these very samples through the same stand-in
    with torch.no_grad():
        feats, _ = StandInInception("x", ["2048", "logits_unbiased"])(
            (tok.decode(codes).expand(-1, 3, -1, -1) * 255).round().to(torch.uint8))
    mean, cov = mean_and_cov(feats.double())
    np.savez(tmp_path / "ref.npz", mu=mean.numpy(), sigma=cov.numpy())
    torch.manual_seed(0)  # the same stand-in weights
    out = InceptionQuality(tok, str(tmp_path / "ref.npz"), batch_size=16)(codes, None)
    assert out["fid_inception"] == pytest.approx(0.0, abs=1e-6) and 1.0 <= out["is_inception"] <= 4.0


def test_bundled_teacher_draws_the_requested_classes():
    """The committed teacher through the preset: guided 4-step samples look like their class."""
    if not (default_root() / "t10k-images-idx3-ubyte.gz").is_file():  # fail, not skip: CI must have the data
        pytest.fail(f"no Fashion-MNIST under {default_root()}: apt-get install -y dataset-fashion-mnist (README's "
                    f"install block)", pytrace=False)
    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.sample import draw_teacher

    registry = registry_with("maskgit", plugin)
    ctx = Context(load_config(["plugins=maskgit"], registry), registry)
    sampler = ctx.build("samplers", ctx.config.eval.sampler, "eval.sampler")
    cond = torch.arange(100) % 10
    tokens = draw_teacher(ctx, sampler, cond, 100, 4, 3.0, torch.Generator().manual_seed(0))
    assert tokens.shape == (100, 49) and tokens.max() < 256  # no mask id left
    metrics = ImageQuality(ctx.tokenizer, real_samples=100)(tokens, cond)
    assert metrics["class_accuracy"] > 0.7  # 0.885 on 1,000 samples when committed

"""The bundled Fashion-MNIST default: captions, presets, and train-teacher -> run -> eval on a toy size."""
import gzip
import struct

import numpy as np
import pytest
import torch

from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.registry import registry_with
from dimo_core.testing import PluginContract
from dimo_meissonic import plugin
from dimo_meissonic.conditions import CLASS_PHRASES, EVAL_TEMPLATES, TRAIN_TEMPLATES

# A smaller transformer than the preset's (the bundled text encoder fixes hidden = 64)
TOY = ["teacher.num_layers=1", "teacher.num_single_layers=1"]


def registry():
    return registry_with("meissonic", plugin)


def context(*overrides):
    reg = registry()
    return Context(load_config(["plugins=meissonic", *overrides], reg), reg)


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def small_fashion_mnist(tmp_path_factory):
    """The first 200 training and 100 test images of Fashion-MNIST, in its own idx format."""
    from dimo_fmnist.fashion_mnist import FILES, load_split
    root = tmp_path_factory.mktemp("fmnist")
    for split, n in (("train", 200), ("test", 100)):
        images, labels = load_split(split)
        write_idx(root / FILES[split][0], (images[:n, 0] * 255).round().numpy())
        write_idx(root / FILES[split][1], labels[:n].numpy())
    return root


def test_captions_name_the_class_and_hold_out_eval_templates():
    conditions = context().conditions
    g = torch.Generator().manual_seed(0)
    train = conditions.sample(64, g)
    texts = conditions.text(train["prompt_id"])
    assert all(CLASS_PHRASES[int(label)] in text for label, text in zip(train["label"], texts))
    train_prompts = {t.format(p) for t in TRAIN_TEMPLATES for p in CLASS_PHRASES}
    assert set(texts) <= train_prompts
    evaluation = conditions.sample(20, g, split="eval")
    assert evaluation["label"].tolist() == list(range(10)) * 2          # every class, in order
    assert not set(conditions.text(evaluation["prompt_id"])) & train_prompts
    assert {t for t in conditions.text(evaluation["prompt_id"])} <= {t.format(p) for t in EVAL_TEMPLATES
                                                                      for p in CLASS_PHRASES}
    assert train["context"].shape == (64, 16, 64) and train["pooled"].shape == (64, 64)
    null = conditions.null(train)
    assert torch.equal(null["pooled"], conditions.negative["pooled"].expand(64, -1)) and (null["label"] == -1).all()


def test_the_1024_preset_takes_the_architecture_from_the_folder_and_needs_its_path(tmp_path):
    reg = registry()
    unset = Context(load_config(["plugins=meissonic", "preset=meissonic_1024", "device=cpu"], reg), reg)
    with pytest.raises(Exception, match="set teacher.path="):
        unset.teacher
    config = load_config(["plugins=meissonic", "preset=meissonic_1024", f"teacher.path={tmp_path}",
                          f"conditions.train_file={tmp_path / 'p.txt'}"], registry())
    assert config.tokenizer.path == str(tmp_path) and config.conditions.path == str(tmp_path)
    assert config.teacher.num_layers is None and config.teacher.timestep == "zero"
    assert config.performance.activation_checkpointing and config.dtype == "bfloat16"
    d = config.distill
    assert (d.batch_size, d.grad_accum, d.lr_generator, d.lr_aux, d.sigma, d.guidance) == (16, 8, 1e-6, 1e-6, 0.3, 4.0)
    assert d.init.r_init == 0.5 and d.schedule_clamp == (0.02, 0.98) and d.frozen == ["embed.*", "mlm_layer.*"]


def test_prompts_typed_by_the_user_are_encoded_with_the_class_they_name():
    conditions = context().conditions
    cond = conditions.from_text(["a sneaker on grass", "a pair of trousers", "a cat"])
    assert cond["label"].tolist() == [7, 1, -1] and cond["context"].shape[0] == 3
    assert conditions.text(cond["prompt_id"]) == ["a sneaker on grass", "a pair of trousers", "a cat"]
    assert conditions.label_of("a t-shirt") == 0  # the longest phrase wins over "shirt"


class TestMeissonicPlugin(PluginContract):
    name = "meissonic"
    module = plugin
    registers = {"teachers": ["meissonic"], "tokenizers": ["meissonic_vq"], "conditions": ["captions", "prompt_files"],
                 "datasets": ["fashion_mnist_captions"], "metrics": ["prompt_alignment"], "writers": ["prompt_grid"],
                 "presets": ["meissonic", "meissonic_1024"]}
    tiny = TOY

    def end_to_end_overrides(self, tmp_path):
        """Random pictures in the Debian layout, and a random evaluation CNN with their reference features."""
        from dimo_fmnist.classifier import FashionCNN, features_and_probs, save_classifier
        from dimo_fmnist.fashion_mnist import load_split
        from dimo_fmnist.testing import random_fashion_mnist
        data = random_fashion_mnist(tmp_path / "fmnist")
        torch.manual_seed(0)
        net = FashionCNN()
        reference = features_and_probs(net, load_split("test", str(data))[0])[0]
        save_classifier(tmp_path / "cnn.safetensors", net, reference, {"test_accuracy": 0.0})
        return [f"dataset.root={data}",
                f"eval.metrics=[{{name: prompt_alignment, classifier: {tmp_path / 'cnn.safetensors'}, root: {data}}}]"]

    def check_report(self, report, out_dir):
        assert all(0.0 <= r["metrics"]["prompt_alignment"] <= 1.0 and np.isfinite(r["metrics"]["fd_fmnist_cnn"])
                   for r in report["rows"])
        assert (out_dir / "samples.png").is_file() and "prompt_alignment" in (out_dir / "report.md").read_text()
        from dimo_core.sample import sample  # dimo sample plugins=meissonic prompt="...": teacher and student
        rows = sample(context(*TOY, f"out_dir={out_dir}", f"teacher.path={out_dir / 'teacher.safetensors'}",
                              "prompt=a photo of a sneaker", "sample.n=3", "sample.steps=2"))
        assert list(rows) == ["teacher 2 steps", "student"] and all(v.shape[0] == 3 for v in rows.values())


def test_the_committed_teacher_draws_the_class_its_prompt_names(tmp_path):
    """The bundled teacher (assets/fmnist) at 8 steps on held-out prompts, judged by maskgit's CNN."""
    from dimo_core.sample import draw_teacher
    from dimo_fmnist.classifier import features_and_probs, load_classifier
    ctx = context(f"out_dir={tmp_path}")
    cond = ctx.conditions.sample(50, torch.Generator().manual_seed(0), split="eval")
    sampler = ctx.build("samplers", ctx.config.eval.sampler, "eval.sampler")
    tokens = draw_teacher(ctx, sampler, cond, 50, 8, ctx.config.eval.guidance, torch.Generator().manual_seed(0))
    _, probs = features_and_probs(load_classifier()[0], ctx.tokenizer.decode(tokens))
    accuracy = (probs.argmax(1) == cond["label"]).double().mean().item()
    assert accuracy > 0.5, accuracy   # 0.974 on 2,000 prompts in README.md; chance is 0.1

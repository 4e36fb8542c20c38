"""The maskgit preset through the core: train-teacher, distil, eval, on a tiny teacher and fake data."""
import json

import torch

from dimo_core.config import Component, load_config
from dimo_core.context import Context
from dimo_core.evaluate import evaluate
from dimo_core.distill import distill
from dimo_core.train_teacher import train_teacher
from dimo_core.registry import registry_with
from dimo_maskgit import plugin
from dimo_fmnist.fashion_mnist import write_split

TINY = ["teacher.hidden=16", "teacher.depth=1", "teacher.heads=2", "teacher.mlp=32"]


def context(overrides, data_root=None):
    registry = registry_with("maskgit", plugin)
    config = load_config(["plugins=maskgit", *TINY, *overrides], registry)
    if data_root:  # real features from the fake test split, not the 10,000 real ones (test speed)
        config.eval.metrics = [Component(name="image_quality", root=str(data_root))]
    return Context(config, registry)


def test_train_teacher_distil_and_eval(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = tmp_path / "fmnist"
    for split, n in (("train", 64), ("test", 32)):  # real-looking layout, random pictures
        write_split(data, split, torch.randint(0, 256, (n, 28, 28), generator=g).numpy(),
                    (torch.arange(n) % 10).numpy())
    common = [f"dataset.root={data}", f"out_dir={tmp_path / 'run'}"]

    teacher = train_teacher(context([*common, "train_teacher.steps=3", "train_teacher.batch_size=8",
                                     "train_teacher.log_every=1"]))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "teacher_log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)

    run = [*common, f"teacher.path={teacher}", "distill.steps=2", "distill.batch_size=4", "distill.log_every=1"]
    assert distill(context(run)).is_file()

    report = evaluate(context([*run, "eval.samples=20", "eval.batch_size=10", "eval.teacher_steps=[1,2]",
                               "eval.grid=5"], data_root=data), progress=False)
    rows = {(r["sampler"], r["steps"]): r["metrics"] for r in report["rows"]}
    assert set(rows) == {("teacher", 1), ("teacher", 2), ("student", 1)}
    for metrics in rows.values():
        assert {"fd_fmnist_cnn", "is_fmnist_cnn", "precision", "recall", "density", "coverage",
                "class_accuracy"} <= set(metrics)
        assert metrics["fd_fmnist_cnn"] >= 0 and 1 <= metrics["is_fmnist_cnn"] <= 10
    assert (tmp_path / "run" / "samples.png").is_file()

"""`dimo export` end to end on the toy teacher, and how the format is chosen."""
import os
import subprocess
import sys

import pytest
import torch

from dimo_core.config import load_config
from dimo_core.context import Context
from dimo_core.registry import get_registry
from dimo_core.student import load_student

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def dimo(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "dimo_core", *args, "--no-progress"], env=ENV,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"dimo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_run")
    args = ["plugins=toy", f"out_dir={out}", "threads=1"]
    dimo("run", *args, "distill.steps=3", "distill.batch_size=8", "distill.lr_generator=1e-2")
    return args, out


def test_toy_student_exports_as_a_teacher_file_the_toy_loader_reads(toy_run):
    args, out = toy_run
    printed = dimo("export", *args).stdout
    exported = out / "export" / "student.safetensors"
    assert str(exported) in printed and exported.is_file()
    registry = get_registry()
    ctx = Context(load_config(args, registry), registry)
    student = load_student(ctx)
    as_teacher = Context(load_config([*args, f"teacher.path={exported}"], registry), registry).teacher.eval()
    original = ctx.teacher.eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, student.vocab_size + 1, (4, student.seq_len), generator=g)  # mask id included
    labels = torch.arange(4) % 4
    with torch.no_grad():
        expected = student(tokens, labels)
        assert torch.equal(as_teacher(tokens, labels), expected)
        assert not torch.equal(original(tokens, labels), expected)  # the run moved the weights


def test_a_format_for_another_teacher_or_an_unknown_one_is_refused(toy_run):
    args, _ = toy_run
    proc = dimo("export", *args, "export.format=maskgit_pth", check=False)
    assert proc.returncode == 2 and "formats for this teacher: safetensors" in proc.stderr
    proc = dimo("export", *args, "export.format=onnx", check=False)
    assert proc.returncode == 2 and "unknown exporter 'onnx'" in proc.stderr and "maskgit_pth" in proc.stderr


def test_the_teacher_default_format_comes_from_the_plugins():
    from dimo_core.export import exporter_name
    registry = get_registry()
    for plugin, expected in (("toy", "safetensors"), ("maskgit", "maskgit_pth"), ("llada", "hf"),
                             ("meissonic", "meissonic_folder")):
        config = load_config([f"plugins={plugin}"], registry)
        assert exporter_name(Context(config, registry)) == expected

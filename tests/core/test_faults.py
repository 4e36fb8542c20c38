"""Faults and malformed inputs the core owns: each is a clear error naming the file and the problem,
and no fault leaves a half-written checkpoint that a later run would read.

Runs `dimo` in this process (cli.main) on a tiny, randomly initialised toy teacher: no start-up cost.
"""
import errno
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import dimo_core.checkpoint
from dimo_core.cli import main
from dimo_core.engine import DiMOEngine

TINY = ["plugins=toy", "teacher.dim=16", "teacher.depth=1", "teacher.heads=2", "teacher.path=null",
        "distill.batch_size=8", "distill.ckpt_every=2", "distill.log_every=1"]


def dimo(capsys, *args):
    """(exit code, stderr) of an in-process `dimo` command."""
    code = main([*args, "--no-progress"])
    return code, capsys.readouterr().err


def run(capsys, out, steps=6, *extra):
    return dimo(capsys, "run", *TINY, f"out_dir={out}", f"distill.steps={steps}", *extra)


def latest_step(out):
    return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]


def no_partial_files(out):
    return [p.name for p in out.rglob("*") if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 6-step run to compare resumed runs with."""
    out = tmp_path_factory.mktemp("straight")
    assert main(["run", *TINY, f"out_dir={out}", "distill.steps=6", "--no-progress"]) == 0
    return load_file(str(out / "student.safetensors"))


def fail_on_call(n, error):
    """A stand-in for a write function that raises ``error`` on its n-th call."""
    calls = {"n": 0}

    def wrap(real):
        def patched(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise error
            return real(*args, **kwargs)
        return patched
    return wrap


@pytest.mark.parametrize("where, error, words", [
    ("save_file", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),  # a read-only folder
])
def test_a_failed_checkpoint_write_is_a_clear_error_and_the_previous_one_resumes(
        capsys, tmp_path, monkeypatch, straight, where, error, words):
    target = dimo_core.checkpoint if where == "save_file" else dimo_core.checkpoint.tempfile
    # the step-2 checkpoint is written whole (state, its JSON, latest.json, student); step 4's fails
    calls_before_failure = 3 if where == "save_file" else 5
    monkeypatch.setattr(target, where, fail_on_call(calls_before_failure, error)(getattr(target, where)))
    code, err = run(capsys, tmp_path)
    assert code == 2 and "Traceback" not in err
    assert f"could not write the checkpoint of step 4" in err and words in err, err
    assert "step_00000002) is intact" in err, err
    assert latest_step(tmp_path) == 2 and no_partial_files(tmp_path)
    monkeypatch.undo()
    assert run(capsys, tmp_path)[0] == 0  # the same command resumes from step 2
    resumed = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoint_folder(capsys, tmp_path):
    assert run(capsys, tmp_path, 2)[0] == 0
    (tmp_path / "checkpoints").chmod(0o555)
    try:
        code, err = run(capsys, tmp_path, 4)
    finally:
        (tmp_path / "checkpoints").chmod(0o755)
    assert code == 2 and "Permission denied" in err and "is intact" in err and latest_step(tmp_path) == 2


def test_an_out_dir_that_is_a_file(capsys, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    code, err = run(capsys, tmp_path / "taken")
    assert code == 2 and "cannot write to out_dir" in err and "taken" in err


@pytest.fixture
def finished(capsys, tmp_path):
    """A finished 2-step run whose checkpoint the tests below damage."""
    assert run(capsys, tmp_path, 2)[0] == 0
    return tmp_path, tmp_path / "checkpoints" / "step_00000002"


def test_a_truncated_checkpoint_names_the_file(capsys, finished):
    out, folder = finished
    state = folder / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    code, err = run(capsys, out, 4)
    assert code == 2 and str(state) in err and "truncated" in err


def test_a_checkpoint_of_another_shape_names_the_keys(capsys, finished):
    out, folder = finished
    code, err = run(capsys, out, 4, "teacher.dim=24")
    assert code == 2 and str(folder) in err and "(generator) does not match the model" in err
    assert "wrong shapes" in err and "checkpoint (16,) vs model (24,)" in err


@pytest.mark.parametrize("damage, words", [
    (lambda folder: (folder.parent / "latest.json").write_text('{"step": 2, "dir"'), "latest.json is not valid JSON"),
    (lambda folder: (folder.parent / "latest.json").write_text("[1, 2]"), "does not name a checkpoint folder"),
    (lambda folder: (folder / "state.json").write_text('{"step": 2}'), "missing skipped, opt_generator, opt_aux"),
    (lambda folder: (folder / "state.json").unlink(), "missing file"),
])
def test_damaged_checkpoint_metadata_is_named(capsys, finished, damage, words):
    out, folder = finished
    damage(folder)
    code, err = run(capsys, out, 4)
    assert code == 2 and words in err and "Traceback" not in err, err


def test_a_truncated_student_names_the_file(capsys, finished):
    out, _ = finished
    student = out / "student.safetensors"
    student.write_bytes(student.read_bytes()[:100])
    code, err = dimo(capsys, "sample", *TINY, f"out_dir={out}", "sample.n=2")
    assert code == 2 and str(student) in err and "not a readable safetensors file" in err


@pytest.mark.parametrize("text, words", [
    ("distill:\n  steps: [1\n", "is not valid YAML at line 3"),
    ("distill:\n  steps: many\n", "distill.steps in {file}: Input should be a valid integer"),
    ("distill:\n  grad_clip: [1, 2]\n", "distill.grad_clip in {file}"),
    ("- a\n- b\n", "must hold a mapping of keys"),
    ("distributed:\n  strategy: mpi\n", "distributed.strategy in {file}: Input should be 'auto', 'none', 'ddp' or 'fsdp'"),
])
def test_config_files_with_wrong_types_name_the_file_and_key(capsys, tmp_path, text, words):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    code, err = dimo(capsys, "config", "show", "plugins=toy", f"config={file}")
    assert code == 2 and words.format(file=file) in err and "Traceback" not in err, err


def test_wrong_types_on_the_command_line(capsys):
    code, err = dimo(capsys, "config", "show", "plugins=toy", "performance.activation_checkpointing=maybe")
    assert code == 2 and "performance.activation_checkpointing: Input should be a valid boolean" in err
    code, err = dimo(capsys, "config", "show", "plugins=toy", "distributed.timeout_minutes=0")
    assert code == 2 and "distributed.timeout_minutes" in err and "must be > 0" in err


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_non_finite_batches_are_counted_in_the_log(capsys, tmp_path, monkeypatch, policy):
    real = DiMOEngine.teacher_logits

    def nan_at_step_3(engine, x_t, cond):
        logits = real(engine, x_t, cond)
        return logits * float("nan") if engine.step == 2 else logits
    monkeypatch.setattr(DiMOEngine, "teacher_logits", nan_at_step_3)
    code, err = run(capsys, tmp_path, 4, f"distill.nonfinite={policy}")
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    if policy == "skip":
        assert code == 0 and [r["step"] for r in log] == [1, 2, 3, 4]
        assert log[2]["skipped"] == 1 and "generator loss is nan" in log[2]["nonfinite"] and log[3]["skipped"] == 1
    else:
        assert code == 2 and "non-finite value at step 2" in err and "step_00000002" in err
        assert log[-1]["step"] == 2 and "generator loss is nan" in log[-1]["stopped"]


def test_batch_that_does_not_split_over_processes(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    code, err = run(capsys, tmp_path, 2, "distill.grad_accum=2")
    assert code == 2 and "distill.batch_size=8 does not split over 3 processes x distill.grad_accum=2" in err
    assert "multiple of 6" in err
    code, err = run(capsys, tmp_path, 2, "distill.batch_size=6", "distributed.strategy=none")
    assert code == 2 and "launched on 3 processes but distributed.strategy=none" in err
    code, err = dimo(capsys, "train-teacher", *TINY, f"out_dir={tmp_path}")
    assert code == 2 and "runs in one process" in err


def test_a_run_that_cannot_fit_is_refused_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("dimo_core.distill.free_memory", lambda device, processes=1: 1000)
    code, err = run(capsys, tmp_path, 2)
    assert code == 2 and "needs about" in err and "performance.activation_checkpointing=true" in err
    assert "performance.memory_check=false" in err and not (tmp_path / "checkpoints").exists()
    assert run(capsys, tmp_path, 2, "performance.memory_check=false")[0] == 0


def test_tied_weights_are_saved(tmp_path):
    from dimo_core.checkpoint import load_tensors, save_tensors
    embedding = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight  # tied, as BERT and MaskGit tie their output to the embedding
    save_tensors(tmp_path / "tied.safetensors", {"emb": embedding.weight, "head": head.weight})
    tensors, _ = load_tensors(tmp_path / "tied.safetensors")
    assert torch.equal(tensors["emb"], tensors["head"])

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
    assert code == 2 and "trained with other settings: teacher.dim: 16 -> 24" in err, err
    code, err = run(capsys, out, 4, "teacher.dim=24", "resume=force")
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


# ---- inputs that must be refused with `dimo: error:` (exit 2), naming the key and what it accepts --------
@pytest.mark.parametrize("override, words", [
    ("distill.ckpt_every=0", "distill.ckpt_every: must be >= 1"),
    ("distill.log_every=0", "distill.log_every: must be >= 1"),
    ("distill.lr_generator=-1", "distill.lr_generator: must be >= 0"),
    ("eval.samples=0", "eval.samples: must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1"),
    ("threads=-1", "threads: must be >= 1"),
    ("threads=0", "threads: must be >= 1"),
    ("device=banana", "device: not a torch device; use cpu, cuda, cuda:N or mps"),
    ("distill.ema=1.5", "distill.ema: must be in [0, 1)"),
    ("distill.label_smoothing=2", "distill.label_smoothing: must be in [0, 1)"),
    ("distill.sigma=-1", "distill.sigma: must be in [0, 1]"),
    ("sample.steps=-3", "sample.steps: must be >= 1"),
    ("resume=maybe", "resume: must be true (continue), false"),
])
def test_out_of_range_values_name_the_key_and_the_range(capsys, override, words):
    code, err = dimo(capsys, "config", "show", "plugins=toy", override)
    assert code == 2 and err.startswith("dimo: error:") and words in err and "Traceback" not in err, err


@pytest.mark.parametrize("r_init", ["1.5", "-0.5", "[0.9,0.2]"])
def test_an_init_ratio_outside_0_1_is_refused(capsys, tmp_path, r_init):
    code, err = run(capsys, tmp_path, 2, f"distill.init.r_init={r_init}")
    assert code == 2 and "distill.init.r_init must lie in [0, 1]" in err, err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a build without CUDA")
def test_cuda_on_a_cpu_build(capsys, tmp_path):
    code, err = run(capsys, tmp_path, 2, "device=cuda")
    assert code == 2 and "device=cuda but torch sees no CUDA GPU" in err and "device=cpu" in err, err


def test_a_yaml_file_of_binary_garbage_is_named(capsys, tmp_path):
    file = tmp_path / "garbage.yaml"
    file.write_bytes(bytes(range(256)) * 4)
    code, err = dimo(capsys, "config", "show", "plugins=toy", f"config={file}")
    assert code == 2 and str(file) in err and "Traceback" not in err, err


@pytest.mark.parametrize("columns", [18, 15])
def test_a_teacher_whose_logits_disagree_with_its_vocab_size(capsys, tmp_path, monkeypatch, columns):
    from dimo_core.mdm import SmallMDM  # the toy's teacher
    real = SmallMDM.forward

    def resized(self, tokens, cond, embedding_noise=0.0):
        logits = real(self, tokens, cond, embedding_noise)
        extra = logits.new_zeros(*logits.shape[:2], max(columns - logits.shape[-1], 0))
        return torch.cat([logits, extra], -1)[..., :columns]
    monkeypatch.setattr(SmallMDM, "forward", resized)
    for command in ("run", "train-teacher"):
        code, err = dimo(capsys, command, *TINY, f"out_dir={tmp_path}", "distill.steps=2", "train_teacher.steps=2")
        assert code == 2 and f"logits have shape (1, 16, {columns})" in err and "vocab_size=16" in err, err


@pytest.mark.parametrize("token, words", [(16, "token 16, the mask id"), (99, "token 99, outside [0, 16)"),
                                          (-1, "token -1, outside [0, 16)")])
def test_dataset_tokens_out_of_range_or_the_mask_id(capsys, tmp_path, monkeypatch, token, words):
    from dimo_core.context import Context
    real = Context.dataset.func

    class Damaged:
        def __init__(self, data):
            self.data = data

        def sample(self, n, generator, split="train"):
            tokens, labels = self.data.sample(n, generator, split)
            tokens[0, 3] = token
            return tokens, labels
    monkeypatch.setattr(Context, "dataset", property(lambda ctx: Damaged(real(ctx))))
    code, err = dimo(capsys, "train-teacher", *TINY, f"out_dir={tmp_path}", "train_teacher.steps=2")
    assert code == 2 and "dataset 'toy_markov' at step 0 gave " + words in err, err


def test_command_line_values_are_literal(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DIMO_TEST_SECRET", "hunter2")
    code = main(["config", "show", "plugins=toy", "sample.student=${oc.env:DIMO_TEST_SECRET}", "prompt=a ${b} c"])
    shown = capsys.readouterr().out
    assert code == 0 and "hunter2" not in shown
    assert "student: ${oc.env:DIMO_TEST_SECRET}" in shown and "- a ${b} c" in shown
    file = tmp_path / "env.yaml"
    file.write_text("sample:\n  student: ${oc.env:DIMO_TEST_SECRET}\n")
    code, err = dimo(capsys, "config", "show", "plugins=toy", f"config={file}")
    assert code == 2 and "sample.student: ${oc.env:DIMO_TEST_SECRET} reads an environment variable" in err, err


# ---- one process per run folder --------------------------------------------------------------------------
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(capsys, tmp_path):
    import subprocess
    import sys
    import time
    first = subprocess.Popen([sys.executable, "-m", "dimo_core", "run", *TINY, f"out_dir={tmp_path}",
                              "distill.steps=100000", "threads=1", "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "dimo.lock"
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        code, err = run(capsys, tmp_path, 2, "seed=7")
        assert code == 2 and f"out_dir={tmp_path} is in use by PID {first.pid}" in err and "dimo run" in err, err
        assert "choose another out_dir" in err and first.poll() is None
    finally:
        first.kill()
        first.wait()
    assert run(capsys, tmp_path, 2, "resume=false")[0] == 0  # the kernel dropped the killed process's lock


def test_a_lock_file_left_by_a_dead_process_is_not_a_lock(capsys, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "dimo.lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "elsewhere", "command": "dimo run"}))
    assert run(capsys, tmp_path, 2)[0] == 0
    assert (tmp_path / "dimo.lock").read_text() == ""  # released on exit


def test_the_lock_is_held_by_this_process_and_eval_after_run_reuses_it(capsys, tmp_path):
    from dimo_core.run_folder import run_folder_lock
    with run_folder_lock(tmp_path, "dimo test"):
        holder = json.loads((tmp_path / "dimo.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "dimo test"
        with run_folder_lock(tmp_path, "dimo eval"):  # the same process: no self-refusal
            pass
    code, err = run(capsys, tmp_path, 2, "eval.after_run=true", "eval.samples=4", "eval.teacher_steps=[1]")
    assert code == 0, err


# ---- what may resume from what ---------------------------------------------------------------------------
def test_resume_with_changed_training_keys_is_refused_then_forced(capsys, tmp_path, straight):
    assert run(capsys, tmp_path, 4)[0] == 0
    record = (tmp_path / "run.config.yaml").read_text()
    code, err = run(capsys, tmp_path, 6, "distill.lr_generator=0.001", "seed=7")
    assert code == 2 and "holds a run (step 4) trained with other settings" in err, err
    assert "distill.lr_generator: 0.0005 -> 0.001; seed: 0 -> 7" in err and "resume=force" in err  # toy preset's lr
    assert (tmp_path / "run.config.yaml").read_text() == record  # the record of the run is untouched
    assert run(capsys, tmp_path, 6, "distill.log_every=3", "distill.ckpt_every=3")[0] == 0  # intervals are free
    resumed = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    code, out = main(["run", *TINY, f"out_dir={tmp_path}", "distill.steps=8", "seed=7", "resume=force",
                      "--no-progress"]), capsys.readouterr().out
    assert code == 0 and "resuming from step 6 of 8" in out, out
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert {"step": 6, "resume": "force", "changed": {"seed": [0, 7]}} in log


def test_a_finished_run_says_so(capsys, tmp_path):
    assert run(capsys, tmp_path, 4)[0] == 0
    before = (tmp_path / "student.safetensors").read_bytes()
    for steps in (4, 2):
        code = main(["run", *TINY, f"out_dir={tmp_path}", f"distill.steps={steps}", "--no-progress"])
        out = capsys.readouterr().out
        assert code == 0 and f"run already finished at step 4 (distill.steps={steps})" in out, out
        assert "student written" not in out
    assert (tmp_path / "student.safetensors").read_bytes() == before


def test_resume_false_moves_the_previous_run_aside(capsys, tmp_path):
    assert run(capsys, tmp_path, 4)[0] == 0
    old_log = (tmp_path / "train_log.jsonl").read_text()
    code = main(["run", *TINY, f"out_dir={tmp_path}", "distill.steps=2", "resume=false", "--no-progress"])
    out = capsys.readouterr().out
    (previous,) = tmp_path.glob("previous-*")
    assert code == 0 and f"moved to {previous}" in out
    assert (previous / "train_log.jsonl").read_text() == old_log and latest_step(previous) == 4
    assert latest_step(tmp_path) == 2 and [p.name for p in (tmp_path / "checkpoints").glob("step_*")] == ["step_00000002"]


# ---- integrity ------------------------------------------------------------------------------------------
def flip(path, start, count):
    data = bytearray(path.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_student_are_detected(capsys, finished):
    out, _ = finished
    student = out / "student.safetensors"
    flip(student, len(student.read_bytes()) // 2, 64)
    for command in ("sample", "eval"):
        code, err = dimo(capsys, command, *TINY, f"out_dir={out}", "sample.n=2", "eval.samples=2")
        assert code == 2 and f"{student} is damaged: its SHA-256" in err, err


def test_a_damaged_checkpoint_names_the_newest_intact_one(capsys, tmp_path, straight):
    assert run(capsys, tmp_path, 4)[0] == 0
    damaged = tmp_path / "checkpoints" / "step_00000004"
    flip(damaged / "state.safetensors", 2000, 4096)
    code, err = run(capsys, tmp_path, 6)
    assert code == 2 and f"{damaged / 'state.safetensors'} is damaged" in err, err
    assert f"the newest intact checkpoint is {tmp_path / 'checkpoints' / 'step_00000002'} (step 2): delete {damaged} " \
           f"and rerun the same command to resume from it" in err
    import shutil
    shutil.rmtree(damaged)
    assert run(capsys, tmp_path, 6)[0] == 0  # as the message says
    resumed = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_teacher_file_dimo_wrote_is_checked(capsys, tmp_path):
    code, _ = dimo(capsys, "train-teacher", *TINY, f"out_dir={tmp_path}", "train_teacher.steps=2",
                   "train_teacher.batch_size=8")
    teacher = tmp_path / "teacher.safetensors"
    assert code == 0 and teacher.exists()
    flip(teacher, len(teacher.read_bytes()) - 100, 8)
    code, err = dimo(capsys, "sample", *TINY, f"teacher.path={teacher}", f"out_dir={tmp_path / 's'}",
                     "sample.source=teacher", "sample.n=2")
    assert code == 2 and f"{teacher} is damaged" in err, err


@pytest.mark.parametrize("named", ["../../../../etc", "/etc", "step_00000002/../../x", "state.json"])
def test_latest_json_may_only_name_a_step_folder(capsys, finished, named):
    out, _ = finished
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"step": 2, "dir": named}))
    code, err = run(capsys, out, 4)
    assert code == 2 and "does not name a checkpoint folder" in err and "step_NNNNNNNN" in err, err


# ---- signals and kill -9 ---------------------------------------------------------------------------------
import random
import signal
import subprocess
import sys
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def same_student(out, reference):
    student = load_file(str(out / "student.safetensors"))
    return set(student) == set(reference) and all(torch.equal(reference[k], student[k]) for k in reference)


def test_sigterm_mid_run_writes_a_checkpoint_and_resumes_byte_identical(capsys, tmp_path, monkeypatch, straight):
    real = DiMOEngine.train_step

    def signalled_during_step_3(engine):
        if engine.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered inside the step: the step still completes
        return real(engine)
    monkeypatch.setattr(DiMOEngine, "train_step", signalled_during_step_3)
    code, err = run(capsys, tmp_path)
    assert code == 143, err
    assert "interrupted at step 3 (SIGTERM); checkpoint step_00000003 written; rerun the same command to resume" in err
    assert latest_step(tmp_path) == 3 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    monkeypatch.undo()
    assert run(capsys, tmp_path)[0] == 0 and same_student(tmp_path, straight)


SLOW_STEPS = ("import sys, time\n"
              "from dimo_core.engine import DiMOEngine\n"
              "real = DiMOEngine.train_step\n"
              "DiMOEngine.train_step = lambda self: (time.sleep({sleep}), real(self))[1]\n"
              "from dimo_core.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")


def slow_run(out, sleep, steps=6):
    """`dimo run` in a child process whose steps take ``sleep`` seconds, started once it logged a step."""
    child = subprocess.Popen([sys.executable, "-c", SLOW_STEPS.format(sleep=sleep), "run", *TINY, f"out_dir={out}",
                              f"distill.steps={steps}", "threads=1", "--no-progress"],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = out / "train_log.jsonl", time.time() + 120
    while not (log.exists() and log.read_text()) and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, child.communicate()
    return child


def test_sigint_from_outside_then_the_same_command_resumes_byte_identical(capsys, tmp_path, straight):
    child = slow_run(tmp_path, 0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    step = latest_step(tmp_path)
    assert child.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith(f"interrupted at step {step} (SIGINT); checkpoint step_{step:08d} written; rerun the "
                                f"same command to resume") and 1 <= step < 6
    assert run(capsys, tmp_path)[0] == 0 and same_student(tmp_path, straight)


def test_a_second_signal_stops_at_once(tmp_path):
    child = slow_run(tmp_path, 4.0)
    child.send_signal(signal.SIGINT)
    time.sleep(1.5)  # a repeat within a second is the same request (torchrun forwards Ctrl-C)
    tic = time.time()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and time.time() - tic < 2.0, err
    assert "second SIGINT: stopped at once" in err and "Traceback" not in err


def test_kill_9_at_ten_random_points_then_resume_is_byte_identical(capsys, tmp_path):
    steps = 30
    reference = tmp_path / "straight"
    assert run(capsys, reference, steps)[0] == 0
    out, rng = tmp_path / "killed", random.Random(23)
    command = [sys.executable, "-m", "dimo_core", "run", *TINY, f"out_dir={out}", f"distill.steps={steps}",
               "threads=1", "--no-progress"]
    killed_at = []
    for target in sorted(rng.randrange(0, steps) for _ in range(10)):
        child = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log, deadline = out / "train_log.jsonl", time.time() + 120
        while child.poll() is None and time.time() < deadline:  # target 0: during start-up
            lines = log.read_text().splitlines() if target and log.exists() else []
            if (lines and json.loads(lines[-1]).get("step", 0) >= target) or (not target and out.exists()):
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        child.kill()
        child.wait()
        killed_at.append(latest_step(out) if (out / "checkpoints" / "latest.json").exists() else 0)
    assert run(capsys, out, steps)[0] == 0
    assert len(set(killed_at)) > 3, killed_at  # the kills landed at different points of the run
    assert same_student(out, load_file(str(reference / "student.safetensors")))
    final = f"checkpoints/step_{steps:08d}/state.safetensors"
    mine, theirs = load_file(str(out / final)), load_file(str(reference / final))
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1)) and no_partial_files(out)


def test_sigterm_under_torchrun_stops_every_rank_at_one_step(capsys, tmp_path):
    """torchrun forwards SIGTERM to every rank; they agree on the step, rank 0 writes the checkpoint,
    all exit 143, and the same command (here on one process) resumes from it."""
    script = tmp_path / "slow_dimo.py"
    script.write_text(SLOW_STEPS.format(sleep=0.3))
    out = tmp_path / "ddp"
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script),
                                 "run", *TINY, f"out_dir={out}", "distill.steps=40", "threads=1", "--no-progress"],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, deadline = out / "train_log.jsonl", time.time() + 180
    while not (log.exists() and log.read_text()) and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert launcher.poll() is None, launcher.communicate()[0][-3000:]
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=120)
    step = latest_step(out)
    assert f"interrupted at step {step} (SIGTERM); checkpoint step_{step:08d} written" in output, output[-3000:]
    assert output.count("dimo: SIGTERM: finishing the current step") == 2  # one line per rank
    assert "dimo_core/" not in output  # no rank's traceback (torchrun prints its own SignalException)
    assert json.loads(log.read_text().splitlines()[-1]) == {"step": step, "skipped": 0, "interrupted": "SIGTERM"}
    assert run(capsys, out, step + 2)[0] == 0 and latest_step(out) == step + 2


def test_train_teacher_has_the_same_resume_rules(capsys, tmp_path):
    teach = ["train-teacher", *TINY, f"out_dir={tmp_path}", "train_teacher.batch_size=8", "train_teacher.ckpt_every=2",
             "--no-progress"]
    assert main([*teach, "train_teacher.steps=2"]) == 0
    assert main([*teach, "train_teacher.steps=2"]) == 0
    assert "teacher training already finished at step 2" in capsys.readouterr().out
    assert main([*teach, "train_teacher.steps=4", "train_teacher.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "trained with other settings: train_teacher.lr: " in err and "-> 0.01" in err, err
    assert main([*teach, "train_teacher.steps=4", "train_teacher.lr=0.01", "resume=force"]) == 0
    assert "resuming from step 2 of 4" in capsys.readouterr().out
    assert main([*teach, "train_teacher.steps=2", "resume=false"]) == 0
    assert len(list(tmp_path.glob("previous-*/teacher_checkpoints"))) == 1

"""The CLI end to end on a tiny toy teacher: train-teacher, run, eval, sample, SIGKILL + resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["plugins=toy", "teacher.dim=16", "teacher.depth=1", "teacher.heads=2"]


def dimo(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "dimo_core", *args, "--no-progress"], env=ENV,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"dimo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    dimo("train-teacher", *TINY, f"out_dir={out}", "train_teacher.steps=20", "train_teacher.batch_size=32")
    return out / "teacher.safetensors"


def sampled(proc) -> dict:
    """The tokens file a `dimo sample` printed (sample-<time>.safetensors)."""
    [path] = [line.strip() for line in proc.stdout.splitlines() if line.strip().endswith(".safetensors")]
    assert Path(path).name.startswith("sample-")
    return load_file(path)


def run_args(teacher, out, steps=6):
    return [*TINY, f"teacher.path={teacher}", f"out_dir={out}", f"distill.steps={steps}", "distill.batch_size=16",
            "distill.ckpt_every=2", "distill.log_every=1"]


def test_plugins_lists_toy_with_what_it_registers():
    out = dimo("plugins").stdout
    assert "toy 0.1.0" in out and "teachers: toy_mdm" in out and "divergences: f, fkl, jeffreys" in out


def test_config_show_prints_the_merged_config():
    out = dimo("config", "show", "plugins=toy", "distill.steps=9").stdout
    assert "steps: 9" in out and "name: toy_mdm" in out


def test_bad_input_is_a_clear_error_without_traceback(tmp_path):
    proc = dimo("run", "plugins=toy", "distill.stepz=3", check=False)
    assert proc.returncode == 2 and "unknown config key 'distill.stepz'" in proc.stderr and "Traceback" not in proc.stderr
    proc = dimo("run", *TINY, f"teacher.path={tmp_path / 'nope.safetensors'}", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "missing checkpoint" in proc.stderr


def test_tokenizer_disagreeing_with_the_teacher_is_refused(tiny_teacher, tmp_path):
    proc = dimo("run", *run_args(tiny_teacher, tmp_path), "tokenizer.vocab_size=12", check=False)
    assert proc.returncode == 2 and "vocabulary mismatch" in proc.stderr and "12" in proc.stderr


def test_run_eval_sample_end_to_end(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    evaluation = ["eval.samples=64", "eval.batch_size=32", "eval.teacher_steps=[1,4]", "distill.sigma=0.8"]
    printed = dimo("run", *run_args(tiny_teacher, out), *evaluation, "eval.after_run=true").stdout
    assert (out / "student.safetensors").exists() and (out / "checkpoints" / "latest.json").exists()
    assert "| student | 1 |" in printed and (out / "report.json").exists()  # eval.after_run: run, then eval
    after_training = json.loads((out / "report.json").read_text())["rows"][-1]
    (out / "report.json").unlink()
    dimo("eval", *run_args(tiny_teacher, out), *evaluation, "eval.teacher_steps=[]")  # a fresh process, no other rows
    alone = json.loads((out / "report.json").read_text())["rows"]
    assert len(alone) == 1 and alone[0]["metrics"] == after_training["metrics"]  # sigma 0.8: the noise changes tokens
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    dimo("eval", *run_args(tiny_teacher, out), *evaluation)
    report = json.loads((out / "report.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in report["rows"]] == [("teacher", 1), ("teacher", 4), ("student", 1)]
    for row in report["rows"]:
        assert set(row) == {"sampler", "steps", "metrics", "seconds_per_sample", "samples"}
        assert row["samples"] == 64 and row["seconds_per_sample"] > 0
        assert {"valid_fraction", "nll_per_token", "pair_tv"} <= set(row["metrics"])
    assert report["config"]["distill"]["steps"] == 6
    assert (out / "report.md").read_text().count("| teacher |") == 2
    assert (out / "quality_vs_steps.png").stat().st_size > 1000 and (out / "samples.md").exists()
    report_samples = (out / "samples.md").read_text()
    assert sampled(dimo("sample", *run_args(tiny_teacher, out), "sample.n=5"))["student"].shape == (5, 16)
    assert sampled(dimo("sample", *run_args(tiny_teacher, out), "sample.n=3", "sample.source=teacher",
                        "sample.steps=4", "sample.sampler.name=ancestral"))["teacher"].shape == (3, 16)
    both = sampled(dimo("sample", *run_args(tiny_teacher, out), "sample.n=2", "sample.source=both", "sample.steps=4",
                        "sample.sampler.name=ancestral"))
    assert both["teacher"].shape == both["student"].shape == (2, 16)
    assert (out / "samples.md").read_text() == report_samples  # the report's file is never replaced
    assert len(list(out.glob("sample-*.md"))) == 3 and len(list(out.glob("sample-*.safetensors"))) == 3
    proc = dimo("sample", *run_args(tiny_teacher, out), "prompt=a: b", check=False)  # taken as text, not YAML
    assert proc.returncode == 2 and "prompt 'a: b' names no class" in proc.stderr  # class labels: an index or a name


def test_teacher_only_eval_needs_no_student(tiny_teacher, tmp_path):
    proc = dimo("eval", *run_args(tiny_teacher, tmp_path), "eval.samples=32", "eval.teacher_steps=[2]", check=False)
    assert proc.returncode == 2 and "no student at" in proc.stderr   # a student row asked for, none there
    dimo("eval", *run_args(tiny_teacher, tmp_path), "eval.samples=32", "eval.teacher_steps=[2]", "eval.student_steps=[]")
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("teacher", 2)]


def test_a_partly_frozen_student_keeps_trained_tensors_and_samples_over_its_teacher(tiny_teacher, tmp_path):
    args = [*run_args(tiny_teacher, tmp_path, steps=2), "distill.frozen=[token_embedding.*,position_embedding]"]
    dimo("run", *args)
    student = load_file(str(tmp_path / "student.safetensors"))
    assert "head.weight" in student and "token_embedding.weight" not in student
    assert sampled(dimo("sample", *args, "sample.n=4"))["student"].shape == (4, 16)
    proc = dimo("sample", *args, "teacher.heads=4", check=False)
    assert proc.returncode == 2 and "holds only the tensors its run trained" in proc.stderr


def test_python_m_matches_console_script():
    a = subprocess.run(["dimo", "plugins"], capture_output=True, text=True, env=ENV)
    b = subprocess.run([sys.executable, "-m", "dimo_core", "plugins"], capture_output=True, text=True, env=ENV)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_sigkill_then_resume_gives_the_same_student_bitwise(tiny_teacher, tmp_path):
    steps = 120
    dimo("run", *run_args(tiny_teacher, tmp_path / "straight", steps), "distill.ckpt_every=10")
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "dimo_core", "run", *run_args(tiny_teacher, killed, steps), "distill.ckpt_every=10",
            "--no-progress"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 30:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 30 <= killed_at < steps
    dimo("run", *run_args(tiny_teacher, killed, steps), "distill.ckpt_every=10")
    a = load_file(str(tmp_path / "straight" / "student.safetensors"))
    b = load_file(str(killed / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [json.loads(l)["step"] for l in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))


def test_plugin_from_a_separate_package_is_discovered_and_used(tmp_path):
    example = tmp_path / "example_plugin"  # a copy: pip builds in the source folder
    shutil.copytree(Path(__file__).parents[2] / "docs" / "example_plugin", example)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(example)], check=True, capture_output=True, timeout=300)
    env = {**ENV, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "dimo_core", "plugins"], env=env, capture_output=True, text=True)
    assert "uniform 0.2.0" in listing.stdout and "divergences: half_fkl" in listing.stdout
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "dimo_core", "run", "plugins=uniform", f"out_dir={out}",
                          "--no-progress"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "student.safetensors").exists()

"""Two CPU processes (gloo) train what one process trains, with the same global batch and seeds.

Tolerance: 1e-5 on weights after a few steps. The batches are identical by construction (every
rank draws the global batch and keeps its rows); what differs is float summation order (a gradient
is the average of two half-batch sums instead of one sum), ~1e-7 per step at these sizes.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dimo_core.config import DistillConfig, PerformanceConfig
from dimo_core.distributed import Parallel
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.init import RandomMaskInit
from dimo_core.conditions import ClassLabels
from dimo_core.mdm import SmallMDM

STEPS = 3
ATOL = 1e-5
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def make_engine(parallel=None, **overrides):
    torch.manual_seed(0)
    teacher = SmallMDM(vocab_size=11, seq_len=8, num_classes=3, dim=16, depth=2, heads=2)
    cfg = DistillConfig(**{"batch_size": 8, "grad_accum": 2, "lr_generator": 1e-3, "lr_aux": 1e-3,
                           "warmup_steps": 0, "ema": 0.9, "guidance": 2.0, "sigma": 0.0, **overrides})
    return DiMOEngine(teacher, ClassLabels(3), FKL(), RandomMaskInit(0.5), cfg, seed=0, parallel=parallel)


def run_steps(engine, n):
    for _ in range(n):
        engine.train_step()
    return engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank, world, port, reference_path, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for strategy in ("ddp", "fsdp"):
        engine = run_steps(make_engine(Parallel(strategy, rank, world)), STEPS)
        results[strategy] = engine.state()  # (full tensors on rank 0, meta)
        results[f"{strategy}_student"] = engine.student_state_dict()  # the EMA weights, gathered
    # a one-process checkpoint resumed on two FSDP ranks (sharded on load), one more step
    reference = torch.load(reference_path)
    engine = make_engine(Parallel("fsdp", rank, world))
    engine.load_state(reference["tensors"], reference["meta"], "reference")
    results["fsdp_resumed"] = run_steps(engine, 1).state()
    # a non-finite loss on rank 1 only: both ranks skip the batch (neither waits for the other)
    engine = run_steps(make_engine(Parallel("ddp", rank, world), nonfinite="skip"), 1)
    before = {k: v.clone() for k, v in engine.generator.module.state_dict().items()}
    if rank == 1:
        with torch.no_grad():
            next(engine.teacher.parameters()).fill_(float("nan"))
    results["skip"] = {"logs": engine.safe_step(), "skipped": engine.skipped, "step": engine.step,
                       "unchanged": all(torch.equal(before[k], v) for k, v in engine.generator.module.state_dict().items())}
    torch.save(results, f"{out_path}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One spawn of two gloo processes runs every two-rank scenario (process start-up is the cost)."""
    tmp = tmp_path_factory.mktemp("ranks")
    one = run_steps(make_engine(), STEPS)
    tensors, meta = one.state()
    torch.save({"tensors": tensors, "meta": meta}, tmp / "reference.pt")
    # fork: the children start with torch already imported (spawn would import it again in each)
    mp.start_processes(_two_rank_worker, args=(2, _free_port(), str(tmp / "reference.pt"), str(tmp / "out")),
                       nprocs=2, start_method="fork")
    return one, torch.load(tmp / "out.0"), torch.load(tmp / "out.1")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_what_one_process_trains(two_ranks, strategy):
    one, rank0, _ = two_ranks
    expected, got = one.state()[0], rank0[strategy][0]
    assert_same_training(trainable_names(one), learning_rates(one.cfg), STEPS, expected, got)
    student = rank0[f"{strategy}_student"]
    assert student.keys() == one.student_state_dict().keys()
    assert all(torch.equal(student[k], got[f"ema.{k}"]) for k in student if f"ema.{k}" in got)
    assert not torch.equal(expected["generator.head.weight"], make_engine().state()[0]["generator.head.weight"])


def assert_same_training(names, lr, steps, expected, got):
    """Adam's moments (running averages of the rank-averaged gradients) agree to 1e-5 of each tensor's
    scale: a wrong gradient scale or batch would show here. Weights (and the EMA) agree to 1e-5 where
    gradients are real; within 2 lr per step where a gradient is zero in exact arithmetic (attention's
    key bias: softmax ignores it), because Adam turns its rounding noise into steps of size lr
    (``lr``: {"generator": .., "aux": ..})."""
    assert {k for k in expected if not k.startswith("rng.")} == {k for k in got if not k.startswith("rng.")}
    for model in ("generator", "aux"):
        for i, name in enumerate(names):
            m_expected, m_got = expected[f"opt_{model}.{i}.exp_avg"], got[f"opt_{model}.{i}.exp_avg"]
            assert torch.allclose(m_expected, m_got, rtol=0, atol=1e-5 * float(m_expected.abs().max()) + 1e-12), name
            real = m_expected.abs() > 1e-6  # element by element: qkv.bias holds real (q, v) and zero (k) gradients
            atol = torch.where(real, ATOL, 2 * lr[model] * steps)
            for key in [f"{model}.{name}"] + ([f"ema.{name}"] if model == "generator" and "ema." + name in expected else []):
                assert ((expected[key] - got[key]).abs() <= atol).all(), (key, (expected[key] - got[key]).abs().max())


def learning_rates(cfg):
    return {"generator": cfg.lr_generator, "aux": cfg.lr_aux}


def trainable_names(engine):
    return [n for n, p in engine.generator.named_parameters() if p.requires_grad]


def test_a_two_rank_fsdp_checkpoint_resumes_in_one_process_and_back(two_ranks):
    _, rank0, _ = two_ranks
    resumed_here = make_engine()
    resumed_here.load_state(*rank0["fsdp"], "two-rank checkpoint")
    straight = run_steps(make_engine(), STEPS + 1)
    for got in (run_steps(resumed_here, 1).state()[0], rank0["fsdp_resumed"][0]):
        assert_same_training(trainable_names(straight), learning_rates(straight.cfg), STEPS + 1, straight.state()[0], got)


def test_a_non_finite_loss_on_one_rank_is_skipped_on_both(two_ranks):
    _, rank0, rank1 = two_ranks
    for result in (rank0["skip"], rank1["skip"]):
        assert result["logs"] is None and result["skipped"] == 1 and result["step"] == 2 and result["unchanged"]


# ---- the CLI under torchrun ----------------------------------------------------------------------
TINY = ["plugins=toy", "teacher.dim=16", "teacher.depth=1", "teacher.heads=2", "teacher.path=null",
        "distill.batch_size=16", "distill.grad_accum=2", "distill.ckpt_every=5", "distill.log_every=1"]


def torchrun(out, steps, *extra, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "dimo_core", "run",
            *TINY, f"out_dir={out}", f"distill.steps={steps}", *extra, "--no-progress"]


def one_process_run(out, steps, *extra):
    from dimo_core.cli import main
    assert main(["run", *TINY, f"out_dir={out}", f"distill.steps={steps}", *extra, "--no-progress"]) == 0


def rank_process(launcher: subprocess.Popen, rank: int):
    import psutil
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "dimo_core" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def test_torchrun_rank_killed_then_same_command_resumes(tmp_path):
    """SIGKILL rank 0 (the one that writes checkpoints) mid-run: torchrun stops the job naming it;
    the same command resumes from the last complete checkpoint and ends where one process ends."""
    steps, out = 40, tmp_path / "ddp"
    launcher = subprocess.Popen(torchrun(out, steps), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and launcher.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 10:
            break
        time.sleep(0.01)
    rank0 = rank_process(launcher, 0)
    assert rank0 is not None and launcher.poll() is None, "the run ended before it could be killed"
    rank0.send_signal(signal.SIGKILL)
    tic = time.time()
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and time.time() - tic < 60  # stopped, did not hang
    assert "rank      : 0" in output and "SIGKILL" in output, output[-2000:]
    killed_at = json.loads(latest.read_text())["step"]
    assert 10 <= killed_at < steps

    proc = subprocess.run(torchrun(out, steps), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list((out / "checkpoints").glob(".step_*"))  # a folder the kill left mid-write is removed
    assert "memory estimate per process (2 processes (ddp)" in proc.stdout
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1))

    one_process_run(tmp_path / "one", steps)
    final = f"checkpoints/step_{steps:08d}/state.safetensors"
    names = [n for n, _ in SmallMDM(dim=16, depth=1, heads=2).named_parameters()]
    cfg = yaml.safe_load((out / "run.config.yaml").read_text())["distill"]
    lrs = {"generator": cfg["lr_generator"], "aux": cfg["lr_aux"]}
    assert_same_training(names, lrs, steps, load_file(str(tmp_path / "one" / final)), load_file(str(out / final)))
    # the two-process checkpoint resumes in one process too (a different number of ranks)
    one_process_run(out, steps + 2)
    assert json.loads(latest.read_text())["step"] == steps + 2

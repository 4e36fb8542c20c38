"""k-step students: one schedule in training and sampling, a rollout that feeds each stage its own
samples, and rows at every trained k in `dimo eval`."""
import json
import math

import pytest
import torch
from torch import nn

from dimo_core.config import DistillConfig
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.errors import ConfigError
from dimo_core.init import RandomMaskInit
from dimo_core.sampling import student_sample
from dimo_core.stages import schedule_r_init, stage_ratio, training_stages

V, L = 5, 12


class StageProbe(nn.Module):
    """Deterministic at temperature 0: position i becomes (i + masks in the row) % V, so a stage's
    visible tokens say how many masks the previous stage's input had. Records every input."""
    vocab_size, mask_id, seq_len = V, V, L

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.inputs = []

    def forward(self, x, cond, embedding_noise=0.0):
        self.inputs.append(x.detach().clone())
        target = (torch.arange(L) + (x == V).sum(1, keepdim=True)) % V
        return self.scale * nn.functional.one_hot(target, V).float()


def check_chain(inputs, r_init, k):
    """inputs[j-1] is stage j's input: the stage's mask count, and the previous stage's sample visible."""
    for j, x in enumerate(inputs, start=1):
        assert ((x == V).sum(1) == round(L * stage_ratio(r_init, k, j))).all()
        if j > 1:
            previous = (torch.arange(L) + (inputs[j - 2] == V).sum(1, keepdim=True)) % V
            visible = x != V
            assert (x[visible] == previous[visible]).all()


def test_stage_ratios_and_the_training_cycle():
    assert [stage_ratio(0.6, 4, j) for j in range(1, 5)] == pytest.approx([0.6, 0.45, 0.3, 0.15])
    cycle = training_stages([1, 2, 4])
    per_k = {k: sum(1 for kk, _ in cycle if kk == k) for k in (1, 2, 4)}
    assert per_k == {1: 4, 2: 4, 4: 4}                        # every k an equal share
    assert sorted(j for k, j in cycle if k == 4) == [1, 2, 3, 4]  # split evenly over its stages
    assert training_stages([1]) == [(1, 1)]
    assert schedule_r_init(RandomMaskInit((0.4, 0.8))) == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="distill.student_steps"):
        schedule_r_init(object())


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_student_sample_feeds_each_stage_its_own_remasked_sample(k):
    model, g = StageProbe(), torch.Generator().manual_seed(0)
    x_init = RandomMaskInit(0.75)(6, L, V, V, g)
    out = student_sample(model, x_init, None, mask_id=V, generator=g, temperature=0, steps=k, r_init=0.75)
    assert len(model.inputs) == k
    check_chain(model.inputs, 0.75, k)
    assert (out == (torch.arange(L) + (model.inputs[-1] == V).sum(1, keepdim=True)) % V).all()


def test_engine_trains_every_stage_on_its_own_rollout():
    """Stage (k, j) of the cycle: j generator passes, the same chain as the sampler's, the last one
    with gradient; the cycle follows the step, so a resumed run trains the same stages."""
    cfg = DistillConfig(batch_size=8, student_steps=[1, 3], ema=0.0, sigma=0.0, temperature=0.0, warmup_steps=0,
                        aux_samples="reuse")
    engine = DiMOEngine(StageProbe(), None, FKL(), RandomMaskInit(0.75), cfg, seed=0)
    generator = engine.generator
    assert engine.stages == [(1, 1)] * 3 + [(3, 1), (3, 2), (3, 3)]
    for _ in range(len(engine.stages)):
        k, j = engine.stage(0)
        generator.inputs.clear()
        engine.train_step()
        assert len(generator.inputs) == j   # the rollout's passes, then the trained pass
        check_chain(generator.inputs, 0.75, k)
    assert engine.stage(0) == engine.stages[0]   # a full period later


def test_k_step_config_is_validated():
    assert DistillConfig(student_steps=[4, 1, 4]).student_steps == [1, 4]
    assert DistillConfig(student_steps=2).student_steps == [2]
    for bad in ([], [0], [1, -2]):
        with pytest.raises(ValueError, match="step counts"):
            DistillConfig(student_steps=bad)


def test_cli_k_step_student_reports_a_row_at_every_trained_k(tmp_path):
    import os
    import subprocess
    import sys
    from safetensors import safe_open

    def dimo(*args):
        proc = subprocess.run([sys.executable, "-m", "dimo_core", *args, "--no-progress"], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        return proc
    # an untrained teacher (teacher.path=null) is enough to check which rows the report holds
    tiny = ["plugins=toy", "teacher.dim=16", "teacher.depth=1", "teacher.heads=2", "teacher.path=null",
            f"out_dir={tmp_path}"]
    dimo("run", *tiny, "distill.steps=4", "distill.batch_size=8", "distill.student_steps=[1,2]")
    with safe_open(str(tmp_path / "student.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["student_steps"]) == [1, 2]
    dimo("eval", *tiny, "eval.samples=16", "eval.batch_size=16", "eval.teacher_steps=[2]")
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("teacher", 2), ("student", 1), ("student", 2)]
    assert "| student | 2 |" in (tmp_path / "report.md").read_text()
    dimo("sample", *tiny, "sample.n=3")   # the largest trained k unless sample.student_steps says
    [drawn] = tmp_path.glob("sample-*.safetensors")   # dimo sample names its files by time
    with safe_open(str(drawn), "pt") as f:
        assert json.loads(f.metadata()["labels"]) == ["student 2 steps"]


class SparseChain:
    """A Markov chain over ``v`` symbols in which each symbol has ``k`` allowed successors, uniform:
    one pass of an MDM teacher (independent marginals) is almost never a valid sequence."""

    def __init__(self, v: int, length: int, k: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.v, self.length, self.k, self.g = v, length, k, g
        self.successors = torch.stack([torch.randperm(v, generator=g)[:k] for _ in range(v)])  # (v, k)
        self.allowed = torch.zeros(v, v, dtype=torch.bool)
        self.allowed[torch.arange(v)[:, None], self.successors] = True

    def sample(self, n):
        x = [torch.randint(0, self.v, (n,), generator=self.g)]
        for _ in range(self.length - 1):
            x.append(self.successors[x[-1], torch.randint(0, self.k, (n,), generator=self.g)])
        return torch.stack(x, 1)

    def valid(self, x):
        return self.allowed[x[:, :-1], x[:, 1:]].all(1).double().mean().item()


class MLPMDM(nn.Module):
    def __init__(self, v, length, hidden=256):
        super().__init__()
        self.vocab_size, self.mask_id, self.seq_len = v, v, length
        self.net = nn.Sequential(nn.Linear(length * (v + 1), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, length * v))

    def forward(self, x, cond, embedding_noise=0.0):
        return self.net(nn.functional.one_hot(x, self.vocab_size + 1).float().flatten(1)).view(len(x), self.seq_len, -1)


def test_a_k_step_student_beats_the_one_step_student():
    """The same budget (250 iterations) trains a one-step student and a [1, 4]-step student; the
    latter at 4 steps must beat the former at 1 step, and the teacher at 4 steps, by far.

    Measured on chain seeds 0-3 (valid share; one-step student at 1 and 4 steps, [1, 4]-step
    student at 4, teacher at 4 and 8): 0.038 / - / 0.299 / 0.128 / 0.351; 0.036 / - / 0.304 / 0.140
    / 0.347; 0.032 / 0.315 / 0.680 / 0.138 / 0.314; 0.054 / 0.613 / 0.307 / 0.129 / 0.337. Re-masking
    the one-step student's sample without training the stages is not reliably worse at this
    budget (seed 3), so that comparison is not asserted."""
    from dimo_core.sampling import AncestralSampler
    v, length = 16, 10
    torch.manual_seed(0)
    src = SparseChain(v, length, k=3, seed=0)
    teacher = MLPMDM(v, length)
    opt = torch.optim.Adam(teacher.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):  # MDM training, loss on every position (the toy teacher's recipe)
        x = src.sample(128)
        masked = torch.rand(128, length, generator=g) < torch.rand(128, 1, generator=g)
        loss = nn.functional.cross_entropy(teacher(x.masked_fill(masked, v), None).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        teacher_at = {s: src.valid(AncestralSampler()(teacher, torch.full((1000, length), v), None, None, steps=s,
                                   guidance=1.0, mask_id=v, generator=torch.Generator().manual_seed(1))) for s in (1, 4)}

    def student_valid(student_steps, *ks):
        cfg = DistillConfig(batch_size=64, lr_generator=5e-4, lr_aux=2e-3, warmup_steps=20, ema=0.0, sigma=0.0,
                            label_smoothing=0.0, aux_samples="reuse", student_steps=student_steps)
        engine = DiMOEngine(teacher, None, FKL(), RandomMaskInit(0.6), cfg, seed=0)
        for _ in range(250):
            engine.train_step()
        out = []
        for k in ks:
            gen = torch.Generator().manual_seed(2)
            x_init = RandomMaskInit(0.6)(1000, length, v, v, gen)
            out.append(src.valid(student_sample(engine.generator, x_init, None, mask_id=v, generator=gen, steps=k, r_init=0.6)))
        return out
    (one_step,), (four_step,) = student_valid([1], 1), student_valid([1, 4], 4)
    assert teacher_at[1] < 0.01 and one_step < 0.1, (one_step, teacher_at)   # hard in one pass
    assert four_step > one_step + 0.15 and four_step > teacher_at[4] + 0.1, (four_step, one_step, teacher_at)

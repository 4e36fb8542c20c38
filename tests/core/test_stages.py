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

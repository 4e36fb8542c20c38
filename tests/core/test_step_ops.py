"""A training step's work does not grow with the batch in number of operations (no per-row Python)
and reads nothing back to the host between logging steps (no ``aten::_local_scalar_dense``, the op
behind ``.item()``, ``float()``, ``bool()``, ``.tolist()``): counted with a TorchDispatchMode on CPU,
which sees every aten op the step dispatches, whatever the device would be."""
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dimo_core.config import DistillConfig
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.init import RandomMaskInit
from dimo_core.conditions import ClassLabels
from dimo_core.mdm import SmallMDM


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


# the toy preset's defaults, and every per-batch path the engine has switched on
SETTINGS = {"toy defaults": {},
            "every path": dict(grad_accum=2, sigma=0.1, guidance=3.0, guidance_ramp=True, aux_samples="fresh",
                               aux_updates=2, normalize="masked", label_smoothing=0.1, aux_grad_clip=1.0)}


def engine_at(batch_size: int, r_init, **overrides) -> DiMOEngine:
    torch.manual_seed(0)
    teacher = SmallMDM(vocab_size=11, seq_len=16, num_classes=3, dim=32, depth=2, heads=2)
    cfg = DistillConfig(**{"batch_size": batch_size, "lr_generator": 5e-4, "lr_aux": 2e-3, "warmup_steps": 2,
                           "ema": 0.99, "grad_clip": 1.0, **overrides})
    return DiMOEngine(teacher, ClassLabels(3), FKL(), RandomMaskInit(r_init), cfg, seed=0)


def ops_of_one_step(batch_size: int, r_init=0.6, **overrides) -> Counter:
    engine = engine_at(batch_size, r_init, **overrides)
    engine.train_step()   # the first step creates the optimisers' state: count a later one
    with CountOps() as counter:
        engine.train_step()
    return counter.ops


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("r_init", [0.6, (0.3, 0.9)])
def test_a_step_runs_the_same_ops_at_batch_8_and_64_and_reads_nothing_back(setting, r_init):
    small, large = ops_of_one_step(8, r_init, **SETTINGS[setting]), ops_of_one_step(64, r_init, **SETTINGS[setting])
    assert small == large, {k: (small[k], large[k]) for k in small.keys() | large.keys() if small[k] != large[k]}
    assert small["aten._local_scalar_dense"] == 0, "a host read in a non-logging step"
    assert sum(small.values()) > 100   # the counter does see the step


def test_the_counter_sees_host_reads_and_the_logging_step_makes_them():
    engine = engine_at(8, 0.6)
    engine.train_step()
    with CountOps() as counter:
        logs = engine.train_step()
        engine.check_finite()
        engine.read_logs(logs)
    assert counter.ops["aten._local_scalar_dense"] > 0

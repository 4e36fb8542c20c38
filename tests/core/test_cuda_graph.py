"""The captured CUDA-graph step trains exactly what the eager step trains (needs a GPU: it runs on
the GPU check; on a CPU machine the engine never captures, which the first test pins)."""
import pytest
import torch

from dimo_core.conditions import ClassLabels
from dimo_core.config import DistillConfig
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.init import RandomMaskInit
from dimo_core.mdm import SmallMDM


def engine_on(device: str, cuda_graph: bool, **overrides) -> DiMOEngine:
    torch.manual_seed(0)
    teacher = SmallMDM(vocab_size=11, seq_len=16, num_classes=3, dim=32, depth=2, heads=2).to(device)
    cfg = DistillConfig(**{"batch_size": 8, "lr_generator": 5e-4, "lr_aux": 2e-3, "warmup_steps": 2, "steps": 10,
                           "ema": 0.99, "grad_clip": 1.0, "sigma": 0.1, **overrides})
    return DiMOEngine(teacher, ClassLabels(3), FKL(), RandomMaskInit(0.6), cfg, seed=0, dtype="float32",
                      cuda_graph=cuda_graph)


def test_on_a_cpu_the_step_is_never_captured():
    engine = engine_on("cpu", cuda_graph=True)
    for _ in range(5):
        engine.train_step()
    assert not engine.graphed and engine._graph is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_steps_train_what_eager_steps_train():
    eager, graphed = engine_on("cuda", cuda_graph=False), engine_on("cuda", cuda_graph=True)
    for _ in range(8):   # 3 eager warm-up steps, the capture, 4 replays
        a, b = eager.train_step(), graphed.train_step()
    assert graphed._graph is not None, graphed.graph_note
    assert eager.read_logs(a) == pytest.approx(graphed.read_logs(b), rel=1e-4)
    for (name, p), q in zip(eager.generator.named_parameters(), graphed.generator.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert eager.step == graphed.step == 8

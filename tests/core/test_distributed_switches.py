"""The per-model switches (activation checkpointing, torch.compile, bf16 autocast), gradient-sync
toggling for accumulation, the attention helper and the memory estimator, on one CPU process."""
import pytest
import torch
import torch.nn.functional as F

from dimo_core.attention import attention, attention_backend, set_attention_backend
from dimo_core.config import DistillConfig, PerformanceConfig
from dimo_core.distributed import Parallel, enable_activation_checkpointing, find_blocks
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.errors import ConfigError
from dimo_core.init import RandomMaskInit
from dimo_core.memory import ModelShape, estimate_memory
from dimo_core.conditions import ClassLabels
from dimo_core.mdm import SmallMDM


def toy():
    torch.manual_seed(0)
    return SmallMDM(vocab_size=11, seq_len=8, num_classes=3, dim=16, depth=2, heads=2)


def two_steps(performance=None, dtype="float32"):
    cfg = DistillConfig(batch_size=8, grad_accum=2, lr_generator=1e-3, lr_aux=1e-3, warmup_steps=0, ema=0.9,
                        guidance=2.0, sigma=0.1)
    engine = DiMOEngine(toy(), ClassLabels(3), FKL(), RandomMaskInit(0.5), cfg, seed=0, dtype=dtype,
                        parallel=Parallel(performance=performance))
    logs = [engine.train_step() for _ in range(2)]
    return engine, logs


@pytest.fixture(scope="module")
def plain():
    return two_steps()[0].student_state_dict()


@pytest.mark.parametrize("switch", [dict(activation_checkpointing=True),
                                    dict(compile=True, compile_backend="eager")])
def test_memory_and_speed_switches_do_not_change_what_is_learned(plain, switch):
    engine, _ = two_steps(PerformanceConfig(**switch))
    got = engine.student_state_dict()
    assert got.keys() == plain.keys()  # in place: no wrapper prefixes in checkpoints
    for k in plain:
        assert torch.allclose(plain[k], got[k], atol=1e-6), k


def test_activation_checkpointing_recomputes_in_backward():
    model = toy()
    enable_activation_checkpointing(model)
    x, cond = torch.randint(0, 11, (2, 8)), torch.tensor([0, 1])
    calls = []
    model.blocks[0].qkv.register_forward_hook(lambda *a: calls.append(1))
    model(x, cond).sum().backward()
    assert len(calls) == 2  # forward, then again in backward
    with torch.no_grad():
        calls.clear()
        model(x, cond)
    assert len(calls) == 1


def test_activation_checkpointing_needs_blocks_or_the_models_switch():
    with pytest.raises(ConfigError, match="no list of blocks"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))
    called = []
    model = torch.nn.Linear(2, 2)
    model.gradient_checkpointing_enable = lambda: called.append(True)
    enable_activation_checkpointing(model)
    assert called == [True]


def test_find_blocks():
    model = toy()
    assert find_blocks(model) == list(model.blocks)
    assert find_blocks(torch.nn.Linear(2, 2)) is None

    class Encoder(torch.nn.Module):  # MaskGit's layout: each layer a ModuleList([attention, MLP])
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])
                                              for _ in range(3))

        def forward(self, x):
            for attention, mlp in self.layers:
                x = x + attention(x)
                x = x + mlp(x)
            return x
    encoder = Encoder()
    assert len(find_blocks(encoder)) == 6 and ModelShape.of(encoder).layers == 3
    plain = encoder(torch.ones(2, 4))
    enable_activation_checkpointing(encoder)
    assert torch.allclose(encoder(torch.ones(2, 4)), plain)


def test_bf16_autocast_keeps_fp32_master_weights():
    engine, logs = two_steps(dtype="bfloat16")
    assert all(p.dtype == torch.float32 for p in engine.generator.parameters())
    assert all(torch.isfinite(v) for step in logs for v in step.values())
    assert all(v.dtype == torch.float32 for v in engine.opt_generator.state_dict()["state"][0].values()
               if v.dim() > 0)


def test_gradients_are_synchronised_only_in_the_last_micro_batch():
    class Sharded(torch.nn.Module):  # FSDP2's interface
        def __init__(self):
            super().__init__()
            self.calls = []

        def set_requires_gradient_sync(self, on):
            self.calls.append(on)
    model = Sharded()
    assert list(Parallel().micro_batches(3, model)) == [0, 1, 2]
    assert model.calls == [False, False, True]


def test_one_process_parallel_is_a_no_op():
    parallel = Parallel()
    model = toy()
    assert parallel.wrap(model) is model and parallel.rows(5) == slice(0, 5)
    assert parallel.all_true(True) and not parallel.all_true(False)
    assert parallel.share(torch.tensor(7)) == 1.0 and parallel.mean({"a": 1.0}) == {"a": 1.0}


@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
def test_attention_helper_matches_sdpa(backend):
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    previous = attention_backend()
    set_attention_backend(backend)  # xformers: falls back to SDPA off CUDA / when not installed
    try:
        assert torch.allclose(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
        mask = torch.tensor([[True, True, True, False, False]])  # keys 3, 4 hidden from every query
        assert torch.allclose(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    finally:
        set_attention_backend(previous)
    with pytest.raises(ValueError, match="choose sdpa or xformers"):
        set_attention_backend("flash")


def test_model_shape_read_off_a_model():
    model = toy()
    shape = ModelShape.of(model, frozen=["token_embedding.*"])
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.trainable == shape.params - model.token_embedding.weight.numel()
    assert (shape.layers, shape.hidden, shape.mlp, shape.vocab, shape.seq_len) == (2, 16, 64, 11, 8)


def test_llada_8b_shape_and_what_fits():
    shape = ModelShape.transformer(layers=32, hidden=4096, mlp=12288, vocab=126464, seq_len=512)
    assert shape.params == pytest.approx(8.0e9, rel=0.01)  # LLaDA-8B
    full_one = estimate_memory(shape, batch_per_rank=1, dtype="bfloat16", cuda=True)
    full_eight = estimate_memory(shape, batch_per_rank=1, dtype="bfloat16", strategy="fsdp", world=8,
                                 activation_checkpointing=True, cuda=True)
    lora = ModelShape.transformer(layers=32, hidden=4096, mlp=12288, vocab=126464, seq_len=512, lora_rank=16,
                                  weight_bytes=2)
    lora_one = estimate_memory(lora, batch_per_rank=1, dtype="bfloat16", activation_checkpointing=True, cuda=True)
    gb80 = 80e9
    assert full_one.total > 3 * gb80 and full_eight.total < gb80 and lora_one.total < gb80
    assert "FSDP gathered block" in full_eight.parts and "total" in full_eight.table()

"""The engine against Algorithm 1: surrogate gradients, aux loss, guidance, EMA, state round trip."""
import copy
import math

import pytest
import torch

from dimo_core.config import DistillConfig
from dimo_core.divergences import FKL, RKL
from dimo_core.engine import EMA, DiMOEngine, freeze, masked_cross_entropy, surrogate_generator_loss
from dimo_core.errors import CheckpointError, ConfigError, NonFiniteLossError
from dimo_core.init import RandomMaskInit
from dimo_core.sampling import guided_logits


def test_surrogate_loss_gradient_is_g_over_n():
    torch.manual_seed(0)
    z = torch.randn(4, 5, 6, requires_grad=True)
    g = torch.randn(4, 5, 6)
    masked = torch.rand(4, 5) < 0.5
    masked[:, 0] = True
    g = g * masked[..., None]
    surrogate_generator_loss(z, g, masked, "batch").backward()
    assert torch.allclose(z.grad, g / 4)
    z.grad = None
    surrogate_generator_loss(z, g, masked, "masked").backward()
    assert torch.allclose(z.grad, g / (4 * masked.sum(1, keepdim=True)[..., None]))


def test_surrogate_gradient_equals_divergence_gradient_under_consistency():
    """If z_theta(x_t) == z_theta(x_init) (consistency assumption) and p_psi == p_theta, the surrogate's
    gradient w.r.t. the generator logits equals the true gradient of D(p_phi || p_theta)."""
    torch.manual_seed(1)
    teacher = torch.randn(2, 3, 5)
    z = torch.randn(2, 3, 5, requires_grad=True)
    masked = torch.ones(2, 3, dtype=torch.bool)
    for div in (FKL(), RKL()):
        true = torch.autograd.grad(div.value(teacher, z).sum() / 2, z)[0]
        z.grad = None
        surrogate_generator_loss(z, div.grad(teacher, z.detach()), masked, "batch").backward()
        assert torch.allclose(z.grad, true, atol=1e-5)
        z.grad = None


def test_masked_cross_entropy_matches_torch_and_skips_mask_column():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 4, 6), torch.randint(0, 6, (3, 4))
    positions = torch.ones(3, 4, dtype=torch.bool)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1), label_smoothing=0.1)
    assert masked_cross_entropy(logits, targets, positions, mask_id=6, label_smoothing=0.1) == pytest.approx(ref.item(), abs=1e-5)
    # mask id inside the vocabulary: no probability is smoothed onto it, the loss stays finite
    targets = targets.clamp(max=4)
    loss = masked_cross_entropy(logits, targets, positions, mask_id=5, label_smoothing=0.1)
    ref = torch.nn.functional.cross_entropy(logits[..., :5].reshape(-1, 5), targets.reshape(-1), label_smoothing=0.1)
    assert loss == pytest.approx(ref.item(), abs=1e-5)


def test_guidance_one_doubled_batch():
    calls = []

    def model(x, c):
        calls.append(len(x))
        return c.float()[:, None, None] * torch.ones(len(x), 2, 3)
    x, cond, null = torch.zeros(2, 2, dtype=torch.long), torch.tensor([3, 5]), torch.tensor([1, 1])
    out = guided_logits(model, x, cond, null, 2.0, "standard")
    assert calls == [4] and torch.allclose(out[:, 0, 0], torch.tensor([5.0, 9.0]))  # 1 + 2 * (c - 1)
    out = guided_logits(model, x, cond, null, 2.0, "maskgit")
    assert torch.allclose(out[:, 0, 0], torch.tensor([7.0, 13.0]))  # c + 2 * (c - 1)
    calls.clear()
    guided_logits(model, x, cond, null, 1.0, "standard")
    assert calls == [2]  # w = 1 in standard form is the conditional model: one pass
    out = guided_logits(model, x, cond, null, torch.tensor([1.0, 3.0]), "standard")  # one weight per row
    assert torch.allclose(out[:, 0, 0], torch.tensor([3.0, 13.0]))


@pytest.mark.parametrize("form", ["standard", "maskgit"])
def test_guidance_ramp_weights_rows_by_their_mask_ratio(dummy, form):
    """Row with ratio r gets off + (w - off) t(r), t = cos(pi r / 2) for arccos: the weight MaskGit's
    ramped sampler uses when its input has that ratio; all masked -> unguided."""
    engine = make_engine(dummy, guidance=3.0, guidance_form=form, guidance_ramp=True, schedule="arccos")
    length, mask_id = engine.seq_len, engine.mask_id
    x_t = torch.zeros(3, length, dtype=torch.long)
    x_t[0] = mask_id                       # r = 1
    x_t[1, : length // 2] = mask_id        # r = 1/2 (even length in the fixture) or close
    x_t[2, :1] = mask_id                   # r = 1 / L
    r = (x_t == mask_id).double().mean(1)
    off = 1.0 if form == "standard" else 0.0
    expected = off + (3.0 - off) * torch.cos(math.pi * r / 2)
    assert torch.allclose(engine.guidance_weight(x_t).double(), expected, atol=1e-6)
    assert float(engine.guidance_weight(x_t)[0]) == pytest.approx(off, abs=1e-6)
    cond = engine.conditions.sample(3, torch.Generator().manual_seed(0))
    null = engine.conditions.null(cond)
    teacher = lambda x, c: engine.logits(engine.teacher, x, c)   # noqa: E731
    rows = [guided_logits(teacher, x_t[i:i + 1], cond[i:i + 1], null[i:i + 1], float(expected[i]), form)
            for i in range(3)]
    assert torch.allclose(engine.teacher_logits(x_t, cond), torch.cat(rows), atol=1e-4)
    assert make_engine(dummy, guidance=3.0).guidance_weight(x_t) == 3.0   # off: the release's constant weight


def make_engine(dummy, **overrides):
    teacher, conditions = dummy
    cfg = DistillConfig(**{"steps": 4, "batch_size": 8, "lr_generator": 1e-3, "lr_aux": 1e-3, "warmup_steps": 2,
                           "ema": 0.9, **overrides})
    return DiMOEngine(teacher, conditions, FKL(), RandomMaskInit(0.5), cfg, seed=0)


@pytest.mark.parametrize("options", [{}, {"aux_samples": "reuse"}, {"normalize": "masked"}, {"aux_updates": 2},
                                     {"grad_accum": 2}, {"guidance": 3.0}, {"frozen": ["tokens.*", "head.bias"]}])
def test_engine_steps_with_every_option(dummy, options):
    engine = make_engine(dummy, **options)
    teacher_before = copy.deepcopy(engine.teacher.state_dict())
    for _ in range(2):
        logs = engine.train_step()
    assert engine.step == 2 and all(torch.isfinite(v) for v in logs.values())
    assert all(torch.equal(teacher_before[k], v) for k, v in engine.teacher.state_dict().items())
    for pattern_param in options.get("frozen", []):
        name = pattern_param.replace("*", "weight")
        assert torch.equal(engine.generator.state_dict()[name], teacher_before[name])


@pytest.mark.parametrize("min_lr_ratio", [1.0, 0.1])
def test_learning_rates_warm_up_then_decay_to_min_lr_ratio(dummy, min_lr_ratio):
    engine = make_engine(dummy, steps=6, warmup_steps=2, lr_generator=1e-3, lr_aux=4e-3, min_lr_ratio=min_lr_ratio)
    seen = []
    for _ in range(6):
        engine.train_step()
        seen += [engine.opt_generator.param_groups[0]["lr"], engine.opt_aux.param_groups[0]["lr"]]
    cosine = [min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    expected = [0.5, 1.0] + cosine   # warm-up (s+1)/2, then cosine over the remaining 4 steps
    assert seen == pytest.approx([lr * f for f in expected for lr in (1e-3, 4e-3)])


def test_frozen_pattern_that_matches_nothing_is_an_error(dummy):
    with pytest.raises(ConfigError, match="matches no parameter"):
        make_engine(dummy, frozen=["embeddings.weight"])


def test_state_round_trip_continues_identically(dummy):
    a = make_engine(dummy)
    a.train_step()
    tensors, meta = a.state()
    tensors = {k: v.clone() for k, v in tensors.items()}
    for _ in range(2):  # one engine at a time: both draw from torch's global stream (dropout, noise)
        a.train_step()
    b = make_engine(dummy)
    b.load_state(tensors, meta)
    for _ in range(2):
        b.train_step()
    for (k, va), vb in zip(a.student_state_dict().items(), b.student_state_dict().values()):
        assert torch.equal(va, vb), k


def test_checkpoints_of_a_partly_frozen_run_hold_trainable_tensors_and_resume(dummy):
    a = make_engine(dummy, frozen=["tokens.*", "head.bias"])
    a.train_step()
    tensors, meta = a.state()
    assert a.partial and not any(k.endswith(("tokens.weight", "head.bias")) for k in tensors)
    assert {f"generator.{k}" for k in a.student_state_dict()} == {k for k in tensors if k.startswith("generator.")}
    tensors = {k: v.clone() for k, v in tensors.items()}
    a.train_step()
    b = make_engine(dummy, frozen=["tokens.*", "head.bias"])  # frozen tensors come from the teacher
    b.load_state(tensors, meta)
    b.train_step()
    for (k, va), vb in zip(a.student_state_dict().items(), b.student_state_dict().values()):
        assert torch.equal(va, vb), k
    del tensors["generator.head.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: head\.weight"):
        make_engine(dummy, frozen=["tokens.*", "head.bias"]).load_state(tensors, meta)
    assert not make_engine(dummy).partial


def test_ema_ramp():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, 0.9999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 0)  # decay = min(0.9999, 1/10) = 0.1
    assert ema.shadow["weight"].item() == pytest.approx(0.9)


def test_nonfinite_loss_stops_with_step_number_or_skips(dummy):
    engine = make_engine(dummy)
    engine.train_step()
    with torch.no_grad():
        next(engine.generator.parameters()).fill_(float("nan"))
    engine.train_step()   # no host read in a step: the check comes when asked (logging steps, checkpoints)
    with pytest.raises(NonFiniteLossError, match="at step 1: generator loss is nan"):
        engine.check_finite()
    engine = make_engine(dummy, nonfinite="skip")
    engine.train_step()
    with torch.no_grad():
        next(engine.teacher.parameters()).fill_(float("nan"))   # a non-finite gradient signal
    before = copy.deepcopy(engine.state()[0])
    assert engine.safe_step() is None and engine.skipped == 1 and engine.step == 2
    after = engine.state()[0]
    for k, v in before.items():   # weights, EMA and optimiser states untouched by the skipped batch
        if not k.startswith("rng."):
            assert torch.equal(v, after[k]), k
    assert engine.last_skip == "generator loss is nan"


def test_freeze_helper():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    freeze(model, ["0.*"])
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]

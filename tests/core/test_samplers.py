import math
import pytest
import torch

from dimo_core import sampling
from dimo_core.errors import ConfigError
from dimo_core.sampling import AncestralSampler, ConfidenceSampler, masked_after_step, sample_categorical, student_sample


def uniform_model(vocab=5):
    calls = []

    def model(x, c):
        calls.append((x == vocab).sum(1).clone())
        return torch.zeros(*x.shape, vocab + 1)  # mask column included: must never be drawn
    return model, calls


def test_schedule_counts_end_at_zero_and_reveal_every_step():
    n0 = torch.tensor([10])
    counts, masked = [], torch.ones(1, 10, dtype=torch.bool)
    for s in range(4):
        keep = masked_after_step("arccos", s, 4, n0, masked)
        counts.append(int(keep))
        masked = torch.arange(10)[None] < keep
    assert counts[-1] == 0 and counts == sorted(counts, reverse=True) and len(set(counts)) == 4


def test_samplers_fill_every_mask_keep_given_tokens_and_never_draw_the_mask():
    for sampler in (ConfidenceSampler("cosine"), AncestralSampler("linear")):
        model, calls = uniform_model()
        x = torch.full((3, 8), 5)
        x[:, 0] = 2  # a given token (a prompt position, say) stays
        out = sampler(model, x, None, None, steps=4, guidance=1.0, mask_id=5, generator=torch.Generator().manual_seed(0))
        assert (out != 5).all() and (out[:, 0] == 2).all() and len(calls) == 4
        assert [int(c[0]) for c in calls] == sorted([int(c[0]) for c in calls], reverse=True)


def test_student_sample_is_one_pass_by_default():
    model, calls = uniform_model()
    x_init = torch.tensor([[5, 1, 5, 3]])
    out = student_sample(model, x_init, None, mask_id=5, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 and (out < 5).all()
    student_sample(model, x_init, None, mask_id=5, generator=torch.Generator().manual_seed(0), steps=3)
    assert len(calls) == 4


def release_schedule(w, r_temp, steps, denominator):
    """valeoai/Maskgit-pytorch's sampling loop, transcribed: _w = w * (indice / d) and Gumbel noise
    r_temp * (1 - indice / d), with d = len(scheduler) - 1 since the 2023-11-03 correction (v1.0)
    and d = len(scheduler) before it."""
    return [(w * (i / denominator), r_temp * (1 - i / denominator)) for i in range(steps)]


def recorded_schedule(monkeypatch, sampler, steps, w):
    """(guidance weight, Gumbel noise scale) the sampler really uses at each step."""
    seen = []
    real_guided, real_noise = sampling.guided_logits, sampler.noise_scale
    monkeypatch.setattr(sampling, "guided_logits", lambda m, x, c, n, weight, form: seen.append([weight]) or
                        real_guided(m, x, c, n, weight, form))
    monkeypatch.setattr(sampler, "noise_scale", lambda progress: seen[-1].append(real_noise(progress)) or
                        real_noise(progress))
    model = lambda x, cond: torch.zeros(*x.shape, 4)   # noqa: E731  ties everywhere: only the schedule matters
    cond = torch.zeros(2, dtype=torch.long)
    sampler(model, torch.full((2, 16), 4), cond, cond, steps=steps, guidance=w, mask_id=4,
            generator=torch.Generator().manual_seed(0))
    return torch.tensor(seen, dtype=torch.float64)


def close(got, expected) -> bool:
    return got.shape == torch.tensor(expected).shape and torch.allclose(got, torch.tensor(expected, dtype=torch.float64))


def test_confidence_sampler_follows_maskgit_v1_corrected_schedule(monkeypatch):
    """Default: full guidance and zero noise at the last step, as v1.0 (and Meissonic's linspace(2, 0, N))."""
    sampler = ConfidenceSampler(schedule="linear", r_temp=4.5, guidance_form="maskgit")
    got = recorded_schedule(monkeypatch, sampler, 4, 3.0)
    assert close(got, release_schedule(3.0, 4.5, 4, 3))
    assert close(got, [(0.0, 4.5), (1.0, 3.0), (2.0, 1.5), (3.0, 0.0)])


def test_the_pre_correction_schedule_is_an_option(monkeypatch):
    sampler = ConfidenceSampler(schedule="linear", r_temp=4.5, guidance_form="maskgit", progress="to_steps")
    got = recorded_schedule(monkeypatch, sampler, 4, 3.0)
    assert close(got, release_schedule(3.0, 4.5, 4, 4))
    assert close(got, [(0.0, 4.5), (0.75, 3.375), (1.5, 2.25), (2.25, 1.125)])


def test_guidance_ramp_in_the_standard_form_and_constant_guidance(monkeypatch):
    standard = ConfidenceSampler(schedule="linear", guidance_form="standard")   # u + w (c - u): 1 is unguided
    assert close(recorded_schedule(monkeypatch, standard, 3, 3.0)[:, 0], [1.0, 2.0, 3.0])
    constant = ConfidenceSampler(schedule="linear", r_temp=2.0, guidance_ramp=False)   # Meissonic's pipeline
    assert close(recorded_schedule(monkeypatch, constant, 3, 9.0), [(9.0, 2.0), (9.0, 1.0), (9.0, 0.0)])


def test_one_step_is_step_zero_of_the_ramp():
    assert sampling.step_progress(0, 1) == 0.0 == sampling.step_progress(0, 1, "to_steps")
    assert ConfidenceSampler(guidance_form="maskgit")._guidance(3.0, sampling.step_progress(0, 1)) == 0.0
    with pytest.raises(ConfigError, match="progress"):
        ConfidenceSampler(progress="s/steps")


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_categorical_draws_follow_the_tempered_softmax(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -3.0, torch.finfo(torch.float32).min])
    n = 200_000
    drawn = sample_categorical(logits.expand(n, 5), torch.Generator().manual_seed(0), temperature)
    counts = torch.bincount(drawn, minlength=5).double()
    p = torch.softmax(logits.double() / temperature, -1)
    # each count is Binomial(n, p_i): within 5 standard deviations, and the -inf column never drawn
    assert ((counts - n * p).abs() <= 5 * (n * p * (1 - p)).sqrt() + 1e-9).all(), (counts / n, p)
    assert counts[4] == 0
    assert (sample_categorical(logits.expand(3, 5), torch.Generator(), 0.0) == 0).all()


def test_inverse_cdf_never_lands_on_a_zero_probability_token_at_either_end(monkeypatch):
    """u = 0 and the largest u below 1 are the edges of the draw: zero-width intervals at the start
    and the end of the vocabulary (a suppressed mask column, say) must not be hit."""
    probs = torch.tensor([[0.0, 0.25, 0.75, 0.0]])
    for u in (0.0, 1.0 - 2.0 ** -53):
        monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: torch.full(shape, u, dtype=torch.float64))
        assert int(sampling.draw_from_probs(probs, torch.Generator())[0]) == (1 if u == 0 else 2)


def test_rare_tokens_keep_their_frequency():
    """A token of probability 1e-3 in the middle of 1,024 others is drawn at that rate."""
    p_rare = 1e-3
    probs = torch.full((1024,), (1 - p_rare) / 1023)
    probs[700] = p_rare
    n = 50_000
    drawn = sample_categorical(probs.log().expand(n, 1024), torch.Generator().manual_seed(1))
    hits = int((drawn == 700).sum())
    assert abs(hits - n * p_rare) <= 5 * (n * p_rare) ** 0.5


def test_student_draws_follow_their_generator_not_the_global_rng():
    """The embedding noise draws from the sampler's generator: a student row does not depend on what ran before."""
    from dimo_core.config import load_config
    from dimo_core.context import Context
    from dimo_core.sample import draw_student
    from dimo_core.testing import DummyTeacher

    torch.manual_seed(0)
    student = DummyTeacher(vocab_size=9, seq_len=12).eval()
    ctx = Context(load_config(["plugins=toy", "distill.sigma=0.5"]))
    cond = torch.arange(64) % 3

    def draw(seed=5):
        return draw_student(ctx, student, cond, 64, 1, 1.0, torch.Generator().manual_seed(seed))

    torch.manual_seed(1)
    first = draw()
    torch.manual_seed(2)
    torch.randn(1000)               # a different history (training, earlier rows) before the same row
    state = torch.get_rng_state()
    assert torch.equal(draw(), first)
    assert torch.equal(torch.get_rng_state(), state)  # and the caller's global stream is left where it was
    assert not torch.equal(draw(seed=6), first)
    ctx_no_noise = Context(load_config(["plugins=toy", "distill.sigma=0.0"]))
    noiseless = draw_student(ctx_no_noise, student, cond, 64, 1, 1.0, torch.Generator().manual_seed(5))
    assert not torch.equal(noiseless, first)  # the noise does reach the samples, so the check above means something




def meissonic_masked_counts(seq_len: int, steps: int, dtype=torch.float32) -> list[int]:
    """Meissonic's scheduler (src/scheduler.py step), transcribed: after step i of N, keep
    floor(seq_len * cos(pi/2 * (i + 1) / N)) masked (float32 in the release), at most one fewer
    than are masked and at least one, none after the last step."""
    counts, unknown = [], seq_len
    for i in range(steps - 1):
        ratio = torch.tensor([(i + 1) / steps], dtype=dtype)
        mask_len = torch.floor(seq_len * torch.cos(ratio * math.pi / 2))
        unknown = int(torch.clamp(torch.minimum(torch.tensor([unknown - 1.0]), mask_len), min=1))
        counts.append(unknown)
    return counts + [0]


@pytest.mark.parametrize("seq_len,steps", [(4096, 48), (1024, 48), (256, 16), (64, 12), (16, 16)])
def test_cosine_masked_counts_are_meissonic_scheduler_s(seq_len, steps):
    still = torch.ones(1, seq_len, dtype=torch.bool)
    counts = []
    for s in range(steps):
        keep = int(masked_after_step("cosine", s, steps, torch.tensor([seq_len]), still)[0])
        counts.append(keep)
        still = torch.arange(seq_len)[None] < keep
    assert counts == meissonic_masked_counts(seq_len, steps, torch.float64)
    # the release's float32 cosine lands just below an integer where cos is exactly k / seq_len
    # (cos(pi/3) = 0.49999997): one token more stays masked there, at those steps only
    release = meissonic_masked_counts(seq_len, steps)
    assert all(0 <= a - b <= 1 for a, b in zip(counts, release))


def release_adap_sche(steps: int, tokens: int, mode: str = "arccos") -> list[int]:
    """MaskGit-pytorch v1.0's adap_sche, transcribed (without its progress bar)."""
    r = torch.linspace(1, 0, steps)
    val_to_mask = {"arccos": torch.arccos(r) / (math.pi * 0.5), "cosine": torch.cos(r * math.pi * 0.5),
                   "linear": 1 - r}[mode]
    sche = (val_to_mask / val_to_mask.sum()) * tokens
    sche = sche.round()
    sche[sche == 0] = 1
    sche[-1] += tokens - sche.sum()
    return sche.int().tolist()


@pytest.mark.parametrize("tokens,steps,mode", [(256, 12, "arccos"), (49, 8, "arccos"), (1024, 16, "cosine"),
                                               (49, 4, "linear")])
def test_maskgit_v1_counts_commit_adap_sche_per_step(tokens, steps, mode):
    committed = []

    def model(x, cond):
        committed.append(int((x == 4).sum()))
        return torch.zeros(*x.shape, 4)

    sampler = ConfidenceSampler(schedule=mode, counts="maskgit_v1")
    out = sampler(model, torch.full((1, tokens), 4), None, None, steps=steps, guidance=1.0, mask_id=4,
                  generator=torch.Generator().manual_seed(0))
    masked_before = committed + [int((out == 4).sum())]
    assert [a - b for a, b in zip(masked_before, masked_before[1:])] == release_adap_sche(steps, tokens, mode)

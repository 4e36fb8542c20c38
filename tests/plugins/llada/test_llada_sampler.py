"""LLaDA's sampler: tokens committed per step, block order, untouched prompt, guidance, Gumbel draws."""
import pytest
import torch

from dimo_core.errors import ConfigError
from dimo_llada.sampler import LLaDASampler, split_evenly

MASK, V = 5, 6   # the mask id is a logit column, as in LLaDA


class Recorder:
    """A fake model: position i prefers token i % 5, more confidently the larger i; records its inputs."""

    def __init__(self, mask_logit: float = 0.0):
        self.inputs, self.conds, self.mask_logit = [], [], mask_logit

    def __call__(self, x, cond):
        self.inputs.append(x.clone())
        self.conds.append(cond)
        b, length = x.shape
        logits = torch.zeros(b, length, V)
        i = torch.arange(length)
        logits[:, i, i % 5] = 1.0 + 0.5 * i.float()
        logits[..., MASK] = self.mask_logit
        return logits


def run(sampler, model, x, steps, cond=None, null=None, guidance=1.0, seed=0):
    return sampler(model, x, cond, null, steps=steps, guidance=guidance, mask_id=MASK,
                   generator=torch.Generator().manual_seed(seed))


def test_split_evenly_gives_the_remainder_to_the_first_steps():
    assert split_evenly(torch.tensor([7, 8]), 3).tolist() == [[3, 2, 2], [3, 3, 2]]
    assert split_evenly(4, 3).tolist() == [2, 1, 1]


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_a_fixed_number_of_tokens_is_committed_per_step(remasking):
    model = Recorder()
    x = torch.full((3, 12), MASK)
    out = run(LLaDASampler(temperature=0.0, remasking=remasking), model, x, steps=4)
    masked_before_each_call = [int((xi == MASK).sum(1).unique()) for xi in model.inputs]
    assert masked_before_each_call == [12, 9, 6, 3]
    assert not (out == MASK).any()


def test_low_confidence_remasking_commits_the_most_confident_positions():
    model = Recorder()
    run(LLaDASampler(temperature=0.0), model, torch.full((2, 12), MASK), steps=4)
    committed_first = (model.inputs[1] != MASK)[0].nonzero().flatten().tolist()
    assert committed_first == [9, 10, 11]           # confidence grows with the position


def test_commits_stay_inside_the_current_block_and_blocks_go_in_order():
    model = Recorder()
    out = run(LLaDASampler(block_length=4, temperature=0.0), model, torch.full((2, 12), MASK), steps=6)
    states = model.inputs + [out]
    for k in range(6):                               # 2 steps per block, 2 tokens per step
        block = k // 2
        new = (states[k] == MASK) & (states[k + 1] != MASK)
        positions = new[0].nonzero().flatten()
        assert len(positions) == 2
        assert ((positions >= 4 * block) & (positions < 4 * block + 4)).all()
        assert (states[k][:, 4 * (block + 1):] == MASK).all()   # later blocks wait, though more confident


def test_steps_are_shared_over_blocks_and_too_few_steps_is_an_error():
    model = Recorder()
    out = run(LLaDASampler(block_length=4, temperature=0.0), model, torch.full((1, 12), MASK), steps=4)
    assert len(model.inputs) == 4 and not (out == MASK).any()
    with pytest.raises(ConfigError, match="blocks"):
        run(LLaDASampler(block_length=4), Recorder(), torch.full((1, 12), MASK), steps=2)


def test_prompt_and_given_tokens_are_untouched():
    model = Recorder()
    prompt = {"input_ids": torch.randint(0, 5, (2, 4)), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    before = {k: v.clone() for k, v in prompt.items()}
    x = torch.full((2, 8), MASK)
    x[:, [0, 5]] = torch.tensor([[3, 1], [2, 4]])    # given tokens are kept, like LLaDA's prompt positions
    out = run(LLaDASampler(block_length=4, temperature=1.0), model, x, steps=4, cond=prompt)
    assert all(torch.equal(before[k], prompt[k]) for k in prompt)
    assert all(c is prompt for c in model.conds)
    assert torch.equal(out[:, [0, 5]], x[:, [0, 5]])
    assert not (out == MASK).any()
    assert [int((xi == MASK).sum()) // 2 for xi in model.inputs] == [6, 4, 3, 1]   # 3 per block, 2 steps each


def test_the_mask_id_is_never_a_candidate():
    out = run(LLaDASampler(temperature=1.0), Recorder(mask_logit=50.0), torch.full((4, 6), MASK), steps=2)
    assert not (out == MASK).any()


def test_guidance_runs_cond_and_null_in_one_doubled_batch():
    def model(x, cond):                              # cond 1: prefers token 0 slightly; null 0: token 0 only
        calls.append(x.shape[0])
        logits = torch.zeros(x.shape[0], x.shape[1], V)
        logits[..., 0] = 1.0
        logits[..., 1] = 0.9 * cond.float()[:, None]
        return logits
    cond, null = torch.ones(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    calls = []
    plain = run(LLaDASampler(temperature=0.0), model, torch.full((2, 4), MASK), 2, cond, null, guidance=1.0)
    assert calls == [2, 2] and (plain == 0).all()
    calls = []
    guided = run(LLaDASampler(temperature=0.0), model, torch.full((2, 4), MASK), 2, cond, null, guidance=3.0)
    assert calls == [4, 4] and (guided == 1).all()   # u + 3 (c - u) = [1, 2.7]: token 1


def test_gumbel_candidates_follow_softmax_at_temperature_one_and_argmax_at_zero():
    probs = torch.tensor([0.5, 0.3, 0.2])
    def model(x, cond):
        logits = torch.full((x.shape[0], x.shape[1], V), -1e9)
        logits[..., :3] = probs.log()
        return logits
    out = run(LLaDASampler(temperature=1.0), model, torch.full((6000, 1), MASK), steps=1)
    freq = torch.bincount(out.flatten(), minlength=3)[:3].float() / out.numel()
    assert torch.allclose(freq, probs, atol=0.03)
    greedy = run(LLaDASampler(temperature=0.0), model, torch.full((50, 1), MASK), steps=1)
    assert (greedy == 0).all()


def release_transfer_counts(masked: int, steps: int) -> list[int]:
    """LLaDA generate.py's get_num_transfer_tokens, transcribed: masked // steps per step, the
    remainder to the first steps."""
    base, remainder = divmod(masked, steps)
    return [base + (i < remainder) for i in range(steps)]


@pytest.mark.parametrize("gen_length,block_length,steps", [(12, 4, 6), (12, 12, 5), (10, 5, 4), (16, 8, 6), (4, 4, 6)])
def test_tokens_committed_per_step_are_generate_py_s(gen_length, block_length, steps):
    """generate.py: steps // num_blocks steps per block, each block's masked count spread by
    get_num_transfer_tokens (the divisible cases generate.py accepts)."""
    model = Recorder()
    out = run(LLaDASampler(block_length=block_length, temperature=0.0), model, torch.full((1, gen_length), MASK),
              steps=steps)
    states = model.inputs + [out]
    committed = [int((a == MASK).sum() - (b == MASK).sum()) for a, b in zip(states, states[1:])]
    blocks = gen_length // block_length
    expected = [n for _ in range(blocks) for n in release_transfer_counts(block_length, steps // blocks)]
    assert committed == [n for n in expected if n]    # a step committing nothing runs no forward pass

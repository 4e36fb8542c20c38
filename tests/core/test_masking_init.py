import math

import pytest
import torch

from dimo_core.init import perturb_embeddings, random_init
from dimo_core.masking import mask_ratio, mask_tokens, sample_masked, schedule_progress


@pytest.mark.parametrize("schedule,t,expected", [("arccos", 0.0, 1.0), ("arccos", 1.0, 0.0), ("cosine", 0.5, math.cos(math.pi / 4)),
                                                 ("linear", 0.25, 0.75), ("square", 0.5, 0.75)])
def test_schedules(schedule, t, expected):
    assert float(mask_ratio(schedule, torch.tensor(t))) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("schedule", ["arccos", "cosine", "linear", "square"])
def test_schedule_progress_inverts_the_schedule(schedule):
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(schedule_progress(schedule, mask_ratio(schedule, t)), t, atol=1e-6)
    assert float(schedule_progress(schedule, torch.tensor(1.0))) == pytest.approx(0.0, abs=1e-6)  # all masked: start


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="arccos"):
        mask_ratio("cosinus", torch.tensor(0.5))


def test_mask_tokens_masks_exactly_round_r_L_at_least_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (5, 20), generator=g)
    ratio = torch.tensor([0.0, 0.26, 0.5, 0.99, 1.0])
    xt, masked = mask_tokens(x, ratio, 10, g)
    assert masked.sum(1).tolist() == [1, 5, 10, 20, 20]
    assert ((xt == 10) == masked).all() and (xt[~masked] == x[~masked]).all()


def test_masked_positions_are_uniform():
    g = torch.Generator().manual_seed(1)
    _, masked = mask_tokens(torch.zeros(20000, 8, dtype=torch.long), torch.full((20000,), 0.25), 9, g)
    freq = masked.float().mean(0)
    assert torch.allclose(freq, torch.full((8,), 0.25), atol=0.015)


def test_random_init_exact_mask_count_and_no_mask_among_codes():
    g = torch.Generator().manual_seed(0)
    x = random_init(64, 30, 7, 7, 0.6, g)
    assert ((x == 7).sum(1) == 18).all()
    assert x[x != 7].max() < 7
    # mask id inside the vocabulary (text models): random codes never equal it
    x = random_init(64, 30, 12, 5, 0.5, g)
    assert ((x == 5).sum(1) == 15).all() and set(x[x != 5].unique().tolist()) <= set(range(12)) - {5}


def test_random_init_range_draws_one_ratio_per_batch():
    g = torch.Generator().manual_seed(0)
    counts = {int((random_init(4, 100, 7, 7, (0.2, 0.8), g) == 7).sum(1).unique().numel()) for _ in range(5)}
    assert counts == {1}  # same ratio for every row of a batch
    totals = {int((random_init(4, 100, 7, 7, (0.2, 0.8), g) == 7).sum()) for _ in range(10)}
    assert len(totals) > 1 and all(80 <= n <= 320 for n in totals)


def test_embedding_perturbation_preserves_scale():
    torch.manual_seed(0)
    e = torch.randn(100000, 4)
    out = perturb_embeddings(e, 0.3, torch.Generator().manual_seed(1))
    assert out.var().item() == pytest.approx(1.0, abs=0.02)
    assert torch.corrcoef(torch.stack([e.flatten(), out.flatten()]))[0, 1].item() == pytest.approx(math.sqrt(1 - 0.09), abs=0.01)
    assert perturb_embeddings(e, 0.0, None) is e
    state = torch.get_rng_state()
    again = perturb_embeddings(e, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and torch.equal(torch.get_rng_state(), state)  # its own stream, not torch's
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        perturb_embeddings(e, 0.3, None)


def test_sample_masked_draws_t_per_row():
    g = torch.Generator().manual_seed(0)
    _, masked = sample_masked(torch.zeros(200, 50, dtype=torch.long), "linear", 3, g)
    assert masked.sum(1).unique().numel() > 10

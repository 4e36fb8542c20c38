"""Di[M]O learns a joint distribution that no one-step sampler of independent marginals can.

Source: two tokens, p(x1, x2) = 1/V if x1 == x2. A one-step MDM sampler draws each position from
its marginal (uniform) and is right 1/V of the time. The teacher is a small MLP fitted to the exact
conditionals; the student distilled from it must produce equal pairs with uniform marginals.
"""
import torch
from torch import nn

from dimo_core.config import DistillConfig
from dimo_core.divergences import FKL
from dimo_core.engine import DiMOEngine
from dimo_core.init import RandomMaskInit

V, L = 4, 2


class MLPTeacher(nn.Module):
    vocab_size, mask_id, seq_len = V, V, L

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L * (V + 1), 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, L * V))

    def forward(self, x, cond, embedding_noise=0.0):
        return self.net(nn.functional.one_hot(x, V + 1).float().flatten(1)).view(-1, L, V)


def exact_conditionals(x):
    """p(x_i | x_-i): a copy of the other token when it is visible, uniform otherwise."""
    probs = torch.full((x.shape[0], L, V), 1.0 / V)
    for i in range(L):
        other = x[:, 1 - i]
        seen = other != V
        probs[seen, i] = nn.functional.one_hot(other[seen], V).float()
    return probs


def equal_pairs(model, r_init):
    g = torch.Generator().manual_seed(1)
    x = RandomMaskInit(r_init)(4000, L, V, V, g)
    with torch.no_grad():
        s = torch.distributions.Categorical(logits=model(x, None)).sample()
    return (s[:, 0] == s[:, 1]).float().mean().item(), torch.bincount(s[:, 0], minlength=V).float() / len(s)


def test_one_step_student_learns_the_joint():
    torch.manual_seed(0)
    teacher = MLPTeacher()
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(400):  # the teacher: MDM training on exact targets
        x = torch.randint(0, V + 1, (256, L))
        loss = -(exact_conditionals(x) * teacher(x, None).log_softmax(-1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = DistillConfig(batch_size=128, lr_generator=1e-3, lr_aux=1e-3, warmup_steps=0, ema=0.0, sigma=0.0,
                        label_smoothing=0.0, schedule="linear")
    engine = DiMOEngine(teacher, None, FKL(), RandomMaskInit(0.5), cfg, seed=0)
    before, _ = equal_pairs(engine.generator, 0.5)
    for _ in range(400):  # 300 sits on the transition (0.84-1.0 over seeds 0-3); 400 is past it
        engine.train_step()
    after, marginal = equal_pairs(engine.generator, 0.5)
    assert before < 0.4                    # the teacher's copy, in one step: close to 1/V
    assert after > 0.9                     # the student: almost always a valid pair
    assert (marginal - 1 / V).abs().max() < 0.08  # ...without collapsing onto one symbol

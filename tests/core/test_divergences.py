"""Divergence values and gradients against closed forms and autograd."""
import pytest
import torch
import torch.nn.functional as F

from dimo_core.divergences import FKL, RKL, FDivergence, Jeffreys, f_divergence

torch.manual_seed(0)
T = torch.randn(6, 5, 11, dtype=torch.float64) * 2
A = torch.randn(6, 5, 11, dtype=torch.float64) * 2


def autograd_of(value_fn, t, a):
    a = a.clone().requires_grad_(True)
    value_fn(t, a).sum().backward()
    return a.grad


def kl(p_logits, q_logits):
    p, lp, lq = p_logits.softmax(-1), p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (p * (lp - lq)).sum(-1)


def test_fkl_value_and_closed_form_gradient():
    assert torch.allclose(FKL().value(T, A).double(), kl(T, A), atol=1e-5)
    closed = A.softmax(-1) - T.softmax(-1)
    assert torch.allclose(FKL().grad(T, A).double(), closed, atol=1e-6)
    assert torch.allclose(autograd_of(lambda t, a: kl(t, a), T, A), closed, atol=1e-10)


def test_rkl_value_and_closed_form_gradient():
    assert torch.allclose(RKL().value(T, A).double(), kl(A, T), atol=1e-5)
    grad = RKL().grad(T, A).double()
    assert torch.allclose(grad, autograd_of(lambda t, a: kl(a, t), T, A), atol=1e-5)


@pytest.mark.parametrize("beta", [-0.5, 0.0, 0.3, 1.0])
def test_jeffreys_interpolates_and_allows_negative_beta(beta):
    j = Jeffreys(beta)
    expected = (1 - beta) * kl(T, A) + beta * kl(A, T)
    assert torch.allclose(j.value(T, A).double(), expected, atol=1e-5)
    assert torch.allclose(j.grad(T, A).double(), autograd_of(lambda t, a: (1 - beta) * kl(t, a) + beta * kl(a, t), T, A),
                          atol=1e-5)


def test_f_divergence_with_u_log_u_is_fkl_and_minus_log_is_rkl():
    assert torch.allclose(f_divergence("kl").grad(T, A).double(), FKL().grad(T, A).double(), atol=1e-5)
    assert torch.allclose(f_divergence("reverse_kl").grad(T, A).double(), RKL().grad(T, A).double(), atol=1e-5)


def test_jensen_shannon_matches_its_definition():
    p, q = T.softmax(-1), A.softmax(-1)
    m = (p + q) / 2
    js = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    assert torch.allclose(f_divergence("js").value(T, A).double(), js, atol=1e-5)
    assert (js <= torch.log(torch.tensor(2.0)) + 1e-9).all()


def test_total_variation_matches_half_l1():
    tv = 0.5 * (T.softmax(-1) - A.softmax(-1)).abs().sum(-1)
    assert torch.allclose(f_divergence("tv").value(T, A).double(), tv, atol=1e-5)


@pytest.mark.parametrize("div", [FKL(), RKL(), Jeffreys(0.5), f_divergence("js"), f_divergence("tv")])
def test_zero_at_equality_and_gradient_sums_to_zero(div):
    assert torch.allclose(div.value(T, T), torch.zeros(()).float(), atol=1e-5)
    # logits are shift-invariant, so every gradient w.r.t. logits sums to zero over the vocabulary
    assert torch.allclose(div.grad(T, A).sum(-1), torch.zeros(()).float(), atol=1e-5)


def test_divergences_are_finite_with_a_suppressed_mask_column():
    t, a = T.float().clone(), A.float().clone()
    t[..., 3] = torch.finfo(torch.float32).min
    a[..., 3] = torch.finfo(torch.float32).min
    for div in [FKL(), RKL(), Jeffreys(0.5), f_divergence("js")]:
        assert torch.isfinite(div.grad(t, a)).all()
        assert torch.isfinite(div.value(t, a)).all()

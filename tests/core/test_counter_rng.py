"""Counter-based uniforms: uniform and independent enough for inverse-CDF draws, a function of
(key, row, position) alone, and the categorical draw built on them follows its probabilities."""
import math

import torch

from dimo_core.counter_rng import _lowbias32, _mul32, row_uniforms, splitmix64, stream_key
from dimo_core.sampling import sample_categorical_from_uniforms


def test_32_bit_products_and_the_mixer_match_python_integers():
    x = torch.tensor([0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 123456789])
    for c in (0x7FEB352D, 0x846CA68B):
        assert _mul32(x, c).tolist() == [(v * c) % 2 ** 32 for v in x.tolist()]

    def lowbias32(v):  # the reference, on Python's unbounded integers
        v ^= v >> 16
        v = (v * 0x7FEB352D) % 2 ** 32
        v ^= v >> 15
        v = (v * 0x846CA68B) % 2 ** 32
        return v ^ (v >> 16)
    assert _lowbias32(x).tolist() == [lowbias32(v) for v in x.tolist()]
    assert splitmix64(0) == 0xE220A8397B1DCDAF   # SplitMix64's first output from state 0


def test_uniforms_are_uniform_and_uncorrelated():
    u = row_uniforms(stream_key(0, 1, 2), 0, 256, 256, 256, "cpu")
    n = u.numel()
    assert u.dtype == torch.float64 and 0 <= u.min() and u.max() < 1
    counts = torch.histc(u.float(), bins=64, min=0, max=1)
    chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
    assert chi2 < 63 + 6 * math.sqrt(2 * 63)                 # chi-square, 63 degrees of freedom
    z = (u - 0.5) * math.sqrt(12)                            # unit variance
    for a, b in ((z[:, 1:], z[:, :-1]), (z[1:], z[:-1])):    # neighbouring positions, neighbouring rows
        assert abs(float((a * b).mean())) < 5 / math.sqrt(a.numel())
    other = row_uniforms(stream_key(0, 1, 3), 0, 256, 256, 256, "cpu")   # the next draw of the step
    assert abs(float(((other - 0.5) * math.sqrt(12) * z).mean())) < 5 / math.sqrt(n)
    assert u.unique().numel() == n


def test_a_row_is_the_same_whoever_draws_it():
    key = stream_key(7, 3, 0)
    whole = row_uniforms(key, 0, 8, 5, 8, "cpu")
    halves = torch.cat([row_uniforms(key, 0, 4, 5, 8, "cpu"), row_uniforms(key, 4, 4, 5, 8, "cpu")])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, row_uniforms(stream_key(7, 4, 0), 0, 8, 5, 8, "cpu"))  # another step


def test_categorical_draw_from_counter_uniforms_follows_the_probabilities():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, -math.inf])
    n = 40_000
    u = row_uniforms(stream_key(1), 0, n, 1, n, "cpu")
    drawn = sample_categorical_from_uniforms(logits.expand(n, 1, 5), u)[:, 0]
    counts = torch.bincount(drawn, minlength=5).double()
    p = torch.softmax(logits.double(), -1)
    assert ((counts - n * p).abs() <= 5 * (n * p * (1 - p)).sqrt() + 1e-9).all() and counts[4] == 0

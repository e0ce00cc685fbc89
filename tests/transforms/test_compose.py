"""Properties of ``reparam.transforms.compose`` against two real convs in sequence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from reparam.transforms import compose_sequential

from ._helpers import (
    F64,
    Rand,
    assert_close,
    assert_on,
    channel_view,
    check_float32,
    conv,
    lcm,
    seeds,
    some_nd,
    strict_defaults,
    with_device,
)


@st.composite
def two_convs(draw, max_k: int = 3, nd: st.SearchStrategy[int] = some_nd):
    """Channel counts valid by construction: ``M`` is a multiple of ``lcm(g1, g2)``."""
    n = draw(nd)
    g1, g2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    mid = lcm(g1, g2) * draw(st.integers(1, 2))
    cin, cout = g1 * draw(st.integers(1, 2)), g2 * draw(st.integers(1, 2))
    k1 = tuple(draw(st.integers(1, max_k)) for _ in range(n))
    k2 = tuple(draw(st.integers(1, max_k)) for _ in range(n))
    return n, g1, g2, cin, mid, cout, k1, k2


@with_device
@given(seed=seeds, convs=two_convs(), b1=st.booleans(), b2=st.booleans(),
       extra=st.integers(0, 2), stride=st.integers(1, 2))
def test_compose_matches_two_unpadded_convs(device, seed, convs, b1, b2, extra, stride):
    n, g1, g2, cin, mid, cout, k1, k2 = convs
    r = Rand(seed, device)
    x = r.normal(2, cin, *(a + b - 1 + extra for a, b in zip(k1, k2, strict=True)))
    w1, w2 = r.normal(mid, cin // g1, *k1), r.normal(cout, mid // g2, *k2)
    bias1 = r.normal(mid) if b1 else None
    bias2 = r.normal(cout) if b2 else None
    expected = conv(conv(x, w1, bias1, groups=g1), w2, bias2, stride, groups=g2)
    with strict_defaults():
        weight, bias, groups = compose_sequential(w1, bias1, g1, w2, bias2, g2)
    assert_on(weight, device, F64)
    assert_on(bias, device, F64)
    assert groups == math.gcd(g1, g2)
    assert weight.shape == (cout, cin // groups, *(a + b - 1 for a, b in zip(k1, k2, strict=True)))
    assert_close(expected, conv(x, weight, bias, stride, groups=groups))


@with_device
@given(seed=seeds, convs=two_convs(max_k=4), data=st.data())
def test_compose_1x1_then_padded_conv(device, seed, convs, data):
    """With a 1x1 first conv and zero b1 the second conv's padding carries over exactly."""
    n, g1, g2, cin, mid, cout, _, k2 = convs
    padding = [data.draw(st.integers(0, k)) for k in k2]
    r = Rand(seed, device)
    x = r.normal(1, cin, *(k + 1 for k in k2))
    w1, w2, bias2 = r.normal(mid, cin // g1, *[1] * n), r.normal(cout, mid // g2, *k2), None
    bias1 = torch.zeros(mid, dtype=F64, device=device)
    expected = conv(conv(x, w1, bias1, groups=g1), w2, bias2, padding=padding, groups=g2)
    weight, bias, groups = compose_sequential(w1, bias1, g1, w2, bias2, g2)
    assert_close(expected, conv(x, weight, bias, padding=padding, groups=groups))


@with_device
@given(seed=seeds, convs=two_convs(nd=st.just(2)), data=st.data())
def test_compose_1x1_bias_with_pad_by_bias(device, seed, convs, data):
    """DBB's BNAndPad: padding conv1's output with b1 (not zeros) keeps it exact."""
    _, g1, g2, cin, mid, cout, _, k2 = convs
    padding = [data.draw(st.integers(0, k)) for k in k2]
    r = Rand(seed, device)
    x = r.normal(1, cin, *(k + 1 for k in k2))
    w1, bias1 = r.normal(mid, cin // g1, 1, 1), r.normal(mid)
    w2, bias2 = r.normal(cout, mid // g2, *k2), r.normal(cout)
    y1 = conv(x, w1, None, groups=g1)
    pad = (padding[1], padding[1], padding[0], padding[0])
    y1 = F.pad(y1, pad) + channel_view(bias1, 2)
    expected = conv(y1, w2, bias2, groups=g2)
    weight, bias, groups = compose_sequential(w1, bias1, g1, w2, bias2, g2)
    assert_close(expected, conv(x, weight, bias, padding=padding, groups=groups))


def test_compose_with_padding_needs_1x1_first_conv():
    """Documents the exactness condition: a 3x3 conv1 breaks the border even with b1 = 0."""
    r = Rand(1, torch.device("cpu"))
    x, w1, w2 = r.normal(1, 2, 6, 6), r.normal(3, 2, 3, 3), r.normal(2, 3, 3, 3)
    expected = F.conv2d(F.conv2d(x, w1), w2, padding=1)
    weight, bias, _ = compose_sequential(w1, None, 1, w2, None, 1)
    actual = F.conv2d(x, weight, bias, padding=1)
    assert expected.shape == actual.shape
    assert (expected - actual).abs().max() > 1e-3
    assert_close(expected[..., 1:-1, 1:-1], actual[..., 1:-1, 1:-1])


@with_device
@given(seed=seeds, convs=two_convs(nd=st.integers(1, 2)))
def test_float32_in_float32_out(device, seed, convs):
    n, g1, g2, cin, mid, cout, k1, k2 = convs
    r = Rand(seed, device, torch.float32)
    w1, b1 = r.normal(mid, cin // g1, *k1), r.normal(mid)
    w2, b2 = r.normal(cout, mid // g2, *k2), r.normal(cout)
    check_float32(compose_sequential, w1, b1, g1, w2, b2, g2, device=device)


def _t(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=F64, device="cpu")


@pytest.mark.parametrize("call", [
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 1, _t(3, 5, 3, 3), None, 1),
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 1, _t(3, 4, 3), None, 1),
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 3, _t(3, 4, 3, 3), None, 1),
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 1, _t(3, 2, 3, 3), None, 2),
    lambda: compose_sequential(_t(4, 2, 1, 1), _t(3), 1, _t(3, 4, 3, 3), None, 1),
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 1, _t(3, 4, 3, 3), _t(4), 1),
    lambda: compose_sequential(_t(4, 2, 1, 1), None, 0, _t(3, 4, 3, 3), None, 1),
    lambda: compose_sequential(_t(4, 2), None, 1, _t(3, 4), None, 1),
    lambda: compose_sequential(_t(4, 2, 1, 1, 1, 1), None, 1, _t(3, 4, 1, 1, 1, 1), None, 1),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()

"""Properties of ``reparam.transforms.affine`` against real torch ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from reparam.transforms import (
    fold_affine_after,
    fold_affine_before,
    norm_to_affine,
    repeat_affine,
)

from ._helpers import (
    F64,
    Rand,
    assert_close,
    assert_on,
    channel_view,
    check_float32,
    conv_specs,
    seeds,
    strict_defaults,
    with_device,
)


@with_device
@given(seed=seeds, c=st.integers(1, 6), batch=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 4), max_size=3), affine=st.booleans(),
       eps=st.sampled_from([0.0, 1e-5, 1e-3, 0.5]))
def test_norm_to_affine_matches_batch_norm(device, seed, c, batch, spatial, affine, eps):
    r = Rand(seed, device)
    x = r.normal(batch, c, *spatial)
    mean, var = r.normal(c), r.positive(c)
    weight, bias = (r.normal(c), r.normal(c)) if affine else (None, None)
    expected = F.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)
    with strict_defaults():
        scale, shift = norm_to_affine(mean, var, weight, bias, eps)
    assert_on(scale, device, F64)
    assert_on(shift, device, F64)
    nd = len(spatial)
    assert_close(expected, x * channel_view(scale, nd) + channel_view(shift, nd))


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(0, 3)), has_bias=st.booleans())
def test_fold_affine_after_matches_conv_then_affine(device, seed, spec, has_bias):
    r = Rand(seed, device)
    x = r.normal(*spec.input_shape(2))
    weight = r.normal(*spec.weight_shape)
    bias = r.normal(spec.out_ch) if has_bias else None
    scale, shift = r.normal(spec.out_ch), r.normal(spec.out_ch)
    y = spec(x, weight, bias)
    expected = y * channel_view(scale, spec.nd) + channel_view(shift, spec.nd)
    with strict_defaults():
        w2, b2 = fold_affine_after(weight, bias, scale, shift)
    assert_on(w2, device, F64)
    assert_on(b2, device, F64)
    assert_close(expected, spec(x, w2, b2))


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(0, 3), padded=False), has_bias=st.booleans())
def test_fold_affine_before_matches_affine_then_conv(device, seed, spec, has_bias):
    r = Rand(seed, device)
    x = r.normal(*spec.input_shape(2))
    weight = r.normal(*spec.weight_shape)
    bias = r.normal(spec.out_ch) if has_bias else None
    scale, shift = r.normal(spec.in_ch), r.normal(spec.in_ch)
    expected = spec(x * channel_view(scale, spec.nd) + channel_view(shift, spec.nd), weight, bias)
    with strict_defaults():
        w2, b2 = fold_affine_before(weight, bias, scale, shift, spec.groups)
    assert_on(w2, device, F64)
    assert_on(b2, device, F64)
    assert_close(expected, spec(x, w2, b2))


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(1, 3)))
def test_fold_affine_before_scale_only_is_exact_with_padding(device, seed, spec):
    r = Rand(seed, device)
    x = r.normal(*spec.input_shape(1))
    weight, bias = r.normal(*spec.weight_shape), r.normal(spec.out_ch)
    scale = r.normal(spec.in_ch)
    shift = torch.zeros(spec.in_ch, dtype=F64, device=device)
    expected = spec(x * channel_view(scale, spec.nd), weight, bias)
    w2, b2 = fold_affine_before(weight, bias, scale, shift, spec.groups)
    assert_close(expected, spec(x, w2, b2))


def test_fold_affine_before_with_padding_and_shift_is_not_exact():
    """Documents the exactness condition: padding happens after the affine."""
    r = Rand(0, torch.device("cpu"))
    x, weight = r.normal(1, 2, 5, 5), r.normal(3, 2, 3, 3)
    scale, shift = r.normal(2), r.normal(2)
    expected = F.conv2d(x * channel_view(scale, 2) + channel_view(shift, 2), weight, padding=1)
    w2, b2 = fold_affine_before(weight, None, scale, shift)
    assert (expected - F.conv2d(x, w2, b2, padding=1)).abs().max() > 1e-3


@with_device
@given(seed=seeds, c=st.integers(1, 5), a=st.integers(1, 4), b=st.integers(1, 4))
def test_repeat_affine_matches_flatten(device, seed, c, a, b):
    r = Rand(seed, device)
    x = r.normal(2, c, a, b)
    scale, shift = r.normal(c), r.normal(c)
    expected = (x * channel_view(scale, 2) + channel_view(shift, 2)).flatten(1)
    with strict_defaults():
        s, t = repeat_affine(scale, shift, a * b)
    assert_on(s, device, F64)
    assert_close(expected, x.flatten(1) * s + t)


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(0, 2), padded=False))
def test_float32_in_float32_out(device, seed, spec):
    r = Rand(seed, device, torch.float32)
    c, ci = spec.out_ch, spec.in_ch
    weight = r.normal(*spec.weight_shape)
    check_float32(norm_to_affine, r.normal(c), r.positive(c), r.normal(c), r.normal(c), 1e-5,
                  device=device)
    check_float32(fold_affine_after, weight, r.normal(c), r.normal(c), r.normal(c),
                  device=device)
    check_float32(fold_affine_before, weight, r.normal(c), r.normal(ci), r.normal(ci),
                  spec.groups, device=device)
    check_float32(repeat_affine, r.normal(c), r.normal(c), 3, device=device)


def _vec(n: int, dtype=F64) -> torch.Tensor:
    return torch.ones(n, dtype=dtype, device="cpu")


_W = torch.ones(4, 2, 3, 3, dtype=F64, device="cpu")


@pytest.mark.parametrize("call", [
    lambda: norm_to_affine(_vec(3), _vec(4), None, None, 1e-5),
    lambda: norm_to_affine(_vec(3), _vec(3), _vec(2), None, 1e-5),
    lambda: norm_to_affine(_vec(3), _vec(3), None, None, -1.0),
    lambda: norm_to_affine(_vec(3), torch.zeros(3, dtype=F64, device="cpu"), None, None, 0.0),
    lambda: norm_to_affine(_vec(3).long(), _vec(3), None, None, 1e-5),
    lambda: norm_to_affine([1.0], _vec(1), None, None, 1e-5),
    lambda: fold_affine_after(_W, None, _vec(3), _vec(4)),
    lambda: fold_affine_after(_W, _vec(5), _vec(4), _vec(4)),
    lambda: fold_affine_after(_vec(4), None, _vec(4), _vec(4)),
    lambda: fold_affine_before(_W, None, _vec(2), _vec(2), groups=3),
    lambda: fold_affine_before(_W, None, _vec(2), _vec(2), groups=2),
    lambda: fold_affine_before(_W, None, _vec(4), _vec(4), groups=0),
    lambda: repeat_affine(_vec(3), _vec(3), 0),
    lambda: repeat_affine(_vec(3), _vec(3), 2.0),
    lambda: repeat_affine(_vec(3), _vec(2), 2),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()

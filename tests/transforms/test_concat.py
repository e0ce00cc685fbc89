"""Properties of ``reparam.transforms.concat`` against channel-concatenated convs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reparam.transforms import concat_kernels

from ._helpers import (
    F64,
    Rand,
    assert_close,
    assert_on,
    check_float32,
    conv_specs,
    seeds,
    strict_defaults,
    with_device,
)


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(0, 3), groups=1),
       outs=st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=4))
def test_concat_matches_cat_of_convs(device, seed, spec, outs):
    r = Rand(seed, device)
    x = r.normal(*spec.input_shape(2))
    weights = [r.normal(o, *spec.weight_shape[1:]) for o, _ in outs]
    biases = [r.normal(o) if has_bias else None for o, has_bias in outs]
    expected = torch.cat([spec(x, w, b) for w, b in zip(weights, biases, strict=True)], dim=1)
    with strict_defaults():
        weight, bias = concat_kernels(weights, biases)
    assert_on(weight, device, F64)
    assert_on(bias, device, F64)
    assert_close(expected, spec(x, weight, bias))


@with_device
@given(seed=seeds, spec=conv_specs(nd=st.integers(1, 2), groups=1))
def test_float32_in_float32_out(device, seed, spec):
    r = Rand(seed, device, torch.float32)
    check_float32(lambda w, v, b: concat_kernels([w, v], [None, b]), r.normal(*spec.weight_shape),
                  r.normal(*spec.weight_shape), r.normal(spec.out_ch), device=device)


def _t(*shape: int, dtype=F64) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype, device="cpu")


@pytest.mark.parametrize("call", [
    lambda: concat_kernels([], []),
    lambda: concat_kernels(_t(2, 3, 3, 3), [None]),
    lambda: concat_kernels([_t(2, 3, 3, 3)], [None, None]),
    lambda: concat_kernels([_t(2, 3, 3, 3), _t(2, 3, 1, 1)], [None, None]),
    lambda: concat_kernels([_t(2, 3, 3, 3), _t(2, 4, 3, 3)], [None, None]),
    lambda: concat_kernels([_t(2, 3, 3, 3), _t(2, 3, 3, 3, dtype=torch.float32)], [None, None]),
    lambda: concat_kernels([_t(2, 3, 3, 3)], [_t(3)]),
    lambda: concat_kernels([_t(2)], [None]),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()

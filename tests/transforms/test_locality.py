"""Properties of ``reparam.transforms.locality`` against ``F.conv2d`` and ``F.linear``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from reparam.transforms import conv_to_fc, dense_to_grouped_fc, grouped_fc_to_dense

from ._helpers import (
    F64,
    Rand,
    assert_close,
    assert_on,
    check_float32,
    seeds,
    strict_defaults,
    with_device,
)


@st.composite
def same_convs(draw):
    """A "same" conv: ``2p == d (k - 1)``; odd ``k`` for odd ``d``."""
    g = draw(st.integers(1, 3))
    cin, cout = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    dilation, kernel, padding = [], [], []
    for _ in range(2):
        d = draw(st.integers(1, 2))
        k = draw(st.integers(1, 4)) if d % 2 == 0 else 2 * draw(st.integers(0, 2)) + 1
        dilation.append(d)
        kernel.append(k)
        padding.append(d * (k - 1) // 2)
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return g, cin, cout, kernel, padding, dilation, h, w


@with_device
@given(seed=seeds, conv=same_convs(), has_bias=st.booleans(),
       chunk=st.sampled_from([1, 7, 2**22]))
def test_conv_to_fc_matches_conv2d(device, seed, conv, has_bias, chunk):
    g, cin, cout, kernel, padding, dilation, h, w = conv
    r = Rand(seed, device)
    x = r.normal(3, cin, h, w)
    weight = r.normal(cout, cin // g, *kernel)
    bias = r.normal(cout) if has_bias else None
    expected = F.conv2d(x, weight, bias, 1, padding, dilation, g).flatten(1)
    with strict_defaults():
        fc, fc_bias = conv_to_fc(weight, bias, h, w, padding, g, dilation,
                                 chunk_elements=chunk)
    assert_on(fc, device, F64)
    assert_on(fc_bias, device, F64)
    assert fc.shape == (g, cout // g * h * w, cin // g * h * w)
    assert fc_bias.shape == (cout * h * w,)
    chunks = x.reshape(3, g, -1).unbind(1)
    grouped = torch.cat([F.linear(xj, fj) for xj, fj in zip(chunks, fc, strict=True)], dim=1)
    grouped = grouped + fc_bias
    assert_close(expected, grouped)
    with strict_defaults():
        dense = grouped_fc_to_dense(fc)
        blocks = dense_to_grouped_fc(dense, g)
    assert_on(dense, device, F64)
    assert_close(expected, F.linear(x.flatten(1), dense, fc_bias))
    assert torch.equal(blocks, fc)


@with_device
@given(seed=seeds, conv=same_convs())
def test_float32_in_float32_out(device, seed, conv):
    g, cin, cout, kernel, padding, dilation, h, w = conv
    r = Rand(seed, device, torch.float32)
    weight, bias = r.normal(cout, cin // g, *kernel), r.normal(cout)
    check_float32(conv_to_fc, weight, bias, h, w, padding, g, dilation, device=device)
    fc = conv_to_fc(weight, bias, h, w, padding, g, dilation)[0]
    check_float32(grouped_fc_to_dense, fc, device=device)
    check_float32(dense_to_grouped_fc, grouped_fc_to_dense(fc), g, device=device)


def test_dense_to_grouped_fc_rejects_off_block_entries():
    dense = torch.ones(4, 6, dtype=F64, device="cpu")
    with pytest.raises(ValueError, match="outside"):
        dense_to_grouped_fc(dense, 2)
    assert dense_to_grouped_fc(dense, 1).shape == (1, 4, 6)


_W = torch.ones(4, 2, 3, 3, dtype=F64, device="cpu")


@pytest.mark.parametrize("call", [
    lambda: conv_to_fc(_W, None, 4, 4, [0, 0], 2),
    lambda: conv_to_fc(_W, None, 4, 4, [1, 1], 2, (2, 1)),
    lambda: conv_to_fc(_W, None, 4, 4, [1], 2),
    lambda: conv_to_fc(_W, None, 4, 4, [1, 1], 3),
    lambda: conv_to_fc(_W, None, 0, 4, [1, 1], 2),
    lambda: conv_to_fc(_W, torch.ones(3, dtype=F64, device="cpu"), 4, 4, [1, 1], 2),
    lambda: conv_to_fc(_W[0], None, 4, 4, [1, 1], 2),
    lambda: conv_to_fc(_W, None, 4, 4, [1, 1], 2, chunk_elements=0),
    lambda: grouped_fc_to_dense(_W[0, 0]),
    lambda: dense_to_grouped_fc(_W[0, 0], 2),
    lambda: dense_to_grouped_fc(_W[0, 0, 0], 1),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()

"""Properties of ``reparam.transforms.kernels`` against real torch convs and pools."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from reparam.transforms import (
    avgpool_kernel,
    center_pad_kernel,
    diagonal_kernel,
    dilate_kernel,
    identity_kernel,
    pad_kernel,
    regroup_kernel,
)

from ._helpers import (
    F64,
    TOL32,
    Rand,
    assert_close,
    assert_on,
    check_float32,
    conv,
    conv_specs,
    seeds,
    strict_defaults,
    with_device,
)

_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
nds = st.integers(1, 3)
plain = dict(padded=False, strided=False, dilated=False)


@with_device
@given(seed=seeds, spec=conv_specs(**plain), data=st.data())
def test_pad_kernel_shifts_the_conv(device, seed, spec, data):
    r = Rand(seed, device)
    offset = [data.draw(st.integers(0, 2)) for _ in spec.kernel]
    target = [k + o + data.draw(st.integers(0, 2))
              for k, o in zip(spec.kernel, offset, strict=True)]
    x = r.normal(*spec.input_shape(1)[:2], *(t + 1 for t in target))
    weight = r.normal(*spec.weight_shape)
    with strict_defaults():
        big = pad_kernel(weight, target, offset)
    assert_on(big, device, F64)
    small_out = conv(x, weight, None, groups=spec.groups)
    # x is one larger than the target kernel: two outputs per dim, the small conv's o and o+1.
    window = tuple(slice(o, o + 2) for o in offset)
    assert_close(small_out[(..., *window)], conv(x, big, None, groups=spec.groups))


@with_device
@given(seed=seeds, spec=conv_specs(dilated=False), grow=st.lists(st.integers(0, 2), max_size=3))
def test_center_pad_kernel_matches_conv_with_more_padding(device, seed, spec, grow):
    r = Rand(seed, device)
    grow = (grow + [0, 0, 0])[: spec.nd]
    x, weight = r.normal(*spec.input_shape(2)), r.normal(*spec.weight_shape)
    target = [k + 2 * e for k, e in zip(spec.kernel, grow, strict=True)]
    with strict_defaults():
        big = center_pad_kernel(weight, target)
    assert_on(big, device, F64)
    padding = [p + e for p, e in zip(spec.padding, grow, strict=True)]
    assert_close(spec(x, weight, None), conv(x, big, None, spec.stride, padding, 1, spec.groups))


@with_device
@given(seed=seeds, spec=conv_specs(dilated=False), data=st.data())
def test_dilate_kernel_matches_dilated_conv(device, seed, spec, data):
    r = Rand(seed, device)
    dilation = [data.draw(st.integers(1, 3)) for _ in spec.kernel]
    size = [d * (k - 1) + 1 + 2 for d, k in zip(dilation, spec.kernel, strict=True)]
    x, weight = r.normal(1, spec.in_ch, *size), r.normal(*spec.weight_shape)
    with strict_defaults():
        dense = dilate_kernel(weight, dilation)
    assert_on(dense, device, F64)
    expected = conv(x, weight, None, spec.stride, spec.padding, dilation, spec.groups)
    assert_close(expected, conv(x, dense, None, spec.stride, spec.padding, 1, spec.groups))


@with_device
@given(seed=seeds, spec=conv_specs(dilated=False))
def test_diagonal_kernel_matches_depthwise_conv(device, seed, spec):
    r = Rand(seed, device)
    channels = spec.in_ch
    x, values = r.normal(*spec.input_shape(2)), r.normal(channels, *spec.kernel)
    with strict_defaults():
        weight = diagonal_kernel(values, spec.groups)
    assert_on(weight, device, F64)
    assert weight.shape == (channels, channels // spec.groups, *spec.kernel)
    expected = conv(x, values.unsqueeze(1), None, spec.stride, spec.padding, 1, channels)
    assert_close(expected, conv(x, weight, None, spec.stride, spec.padding, 1, spec.groups))


odd_sizes = st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3)


@with_device
@given(seed=seeds, g=st.integers(1, 3), per_group=st.integers(1, 3), kernel=odd_sizes,
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_identity_kernel_is_identity(device, seed, g, per_group, kernel, dtype):
    channels = g * per_group
    x = Rand(seed, device, dtype).normal(2, channels, *(k + 1 for k in kernel))
    with strict_defaults():
        weight = identity_kernel(channels, g, kernel, dtype, device)
    assert_on(weight, device, dtype)
    assert_close(x, conv(x, weight, None, 1, [k // 2 for k in kernel], 1, g))


@with_device
@given(seed=seeds, g=st.integers(1, 3), per_group=st.integers(1, 3), data=st.data(),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_avgpool_kernel_matches_avg_pool(device, seed, g, per_group, data, dtype):
    nd = data.draw(nds)
    kernel = [data.draw(st.integers(1, 4)) for _ in range(nd)]
    stride = [data.draw(st.integers(1, 2)) for _ in range(nd)]
    padding = [data.draw(st.integers(0, k // 2)) for k in kernel]
    channels = g * per_group
    x = Rand(seed, device, dtype).normal(2, channels, *(k + 2 for k in kernel))
    with strict_defaults():
        weight = avgpool_kernel(channels, g, kernel, dtype, device)
    assert_on(weight, device, dtype)
    expected = _POOL[nd](x, kernel, stride, padding, count_include_pad=True)
    actual = conv(x, weight, None, stride, padding, 1, g)
    assert_close(expected, actual, TOL32 if dtype == torch.float32 else 1e-9)


@with_device
@given(seed=seeds, g_to=st.integers(1, 3), ratio=st.integers(1, 3), data=st.data())
def test_regroup_kernel_matches_grouped_conv(device, seed, g_to, ratio, data):
    g_from = g_to * ratio
    spec = data.draw(conv_specs(groups=g_from, max_per_group=2))
    r = Rand(seed, device)
    x, weight = r.normal(*spec.input_shape(1)), r.normal(*spec.weight_shape)
    with strict_defaults():
        regrouped = regroup_kernel(weight, g_from, g_to)
    assert_on(regrouped, device, F64)
    assert regrouped.shape == (spec.out_ch, spec.in_ch // g_to, *spec.kernel)
    expected = spec(x, weight, None)
    actual = conv(x, regrouped, None, spec.stride, spec.padding, spec.dilation, g_to)
    assert_close(expected, actual)


@with_device
@given(seed=seeds, spec=conv_specs(dilated=False, nd=st.integers(1, 2)))
def test_float32_in_float32_out(device, seed, spec):
    weight = Rand(seed, device, torch.float32).normal(*spec.weight_shape)
    check_float32(pad_kernel, weight, [k + 2 for k in spec.kernel], [1] * spec.nd, device=device)
    check_float32(center_pad_kernel, weight, [k + 2 for k in spec.kernel], device=device)
    check_float32(dilate_kernel, weight, [2] * spec.nd, device=device)
    check_float32(regroup_kernel, weight, spec.groups, 1, device=device)
    check_float32(diagonal_kernel, weight[0], 1, device=device)


_W = torch.ones(4, 2, 3, 3, dtype=F64, device="cpu")


@pytest.mark.parametrize("call", [
    lambda: pad_kernel(_W, [2, 5], [0, 0]),
    lambda: pad_kernel(_W, [5, 5], [3, 0]),
    lambda: pad_kernel(_W, [5, 5], [-1, 0]),
    lambda: pad_kernel(_W, [5], [0]),
    lambda: pad_kernel(_W[0], [5, 5], [0, 0]),
    lambda: center_pad_kernel(_W, [4, 5]),
    lambda: center_pad_kernel(_W, [1, 3]),
    lambda: dilate_kernel(_W, [0, 1]),
    lambda: dilate_kernel(_W, [1.5, 1]),
    lambda: diagonal_kernel(_W[:3, 0], 2),
    lambda: diagonal_kernel(_W[:, 0, 0, 0], 1),
    lambda: identity_kernel(4, 2, [2, 3], F64, "cpu"),
    lambda: identity_kernel(4, 3, [3, 3], F64, "cpu"),
    lambda: identity_kernel(4, 2, [3, 3], torch.int64, "cpu"),
    lambda: identity_kernel(4, 2, [], F64, "cpu"),
    lambda: avgpool_kernel(0, 1, [3], F64, "cpu"),
    lambda: avgpool_kernel(4, 1, [3], F64, "not-a-device"),
    lambda: regroup_kernel(_W, 2, 4),
    lambda: regroup_kernel(_W, 3, 1),
    lambda: regroup_kernel(_W, 2, 0),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()

"""``reparam.transforms.align`` and ``locality.inject_convs`` against the convs they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reparam.convspec import conv_from_spec, spec_from_conv
from reparam.errors import Refusal
from reparam.transforms import concat_specs, inject_convs, merge_specs
from reparam.transforms.align import add_into_frame

F64 = torch.float64


def _convs(*shapes: tuple[int, int, int]) -> list[nn.Conv2d]:
    """Convs ``(kernel, padding, dilation)`` over 4 → 6 channels, float64, random bias."""
    torch.manual_seed(0)
    return [nn.Conv2d(4, 6, k, padding=p, dilation=d, dtype=F64) for k, p, d in shapes]


@pytest.mark.parametrize("size", [(7, 9), (5, 4)])
def test_merge_specs_sums_branches(size: tuple[int, int]) -> None:
    convs = _convs((3, 1, 1), (1, 0, 1), (3, 2, 2), (5, 2, 1))
    merged = merge_specs([spec_from_conv(c) for c in convs])
    assert not isinstance(merged, Refusal)
    x = torch.randn(2, 4, *size, dtype=F64)
    torch.testing.assert_close(
        conv_from_spec(merged)(x), sum(c(x) for c in convs), rtol=1e-12, atol=1e-12
    )


def test_merge_specs_refuses_other_grids() -> None:
    convs = _convs((3, 1, 1), (3, 0, 1))  # "same" vs "valid": different output sizes
    merged = merge_specs([spec_from_conv(c) for c in convs])
    assert isinstance(merged, Refusal) and "output sizes" in merged.reason


def test_concat_specs_stacks_channels() -> None:
    convs = _convs((3, 1, 1), (1, 0, 1))
    merged = concat_specs([spec_from_conv(c) for c in convs])
    assert not isinstance(merged, Refusal)
    x = torch.randn(1, 4, 6, 5, dtype=F64)
    torch.testing.assert_close(
        conv_from_spec(merged)(x), torch.cat([c(x) for c in convs], 1), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "small",
    [
        dict(kernel_size=(1, 5), padding=(0, 2), groups=2),
        dict(kernel_size=(3, 1), padding=(2, 0), dilation=2, bias=False),
        dict(kernel_size=3, padding=0),  # unpadded: reads the frame's inner taps
    ],
)
def test_add_into_frame_is_the_sum_in_the_larger_conv(small: dict) -> None:
    torch.manual_seed(2)
    frame = nn.Conv2d(4, 6, 5, padding=2, groups=2, dtype=F64, padding_mode="reflect")
    if small.get("padding") == 0:
        frame = nn.Conv2d(4, 6, 5, padding=1, dtype=F64)  # same grid as the unpadded 3×3
    conv = nn.Conv2d(4, 6, dtype=F64, padding_mode=frame.padding_mode, **small)
    merged = add_into_frame(spec_from_conv(frame), spec_from_conv(conv))
    assert not isinstance(merged, Refusal)
    assert merged.kernel_size == (5, 5) and merged.padding == spec_from_conv(frame).padding
    x = torch.randn(2, 4, 7, 8, dtype=F64)
    torch.testing.assert_close(conv_from_spec(merged)(x), frame(x) + conv(x), rtol=1e-12,
                               atol=1e-12)


def test_add_into_frame_refuses_what_the_frame_does_not_hold() -> None:
    frame = spec_from_conv(nn.Conv2d(4, 6, 3, padding=1))
    cases = [
        (nn.Conv2d(4, 6, 5, padding=2), "does not fit"),
        (nn.Conv2d(4, 6, 1, stride=2), "stride or output grid"),
        (nn.Conv2d(4, 4, 1), "channels"),
        (nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), "padding mode"),
    ]
    for conv, words in cases:
        refused = add_into_frame(frame, spec_from_conv(conv))
        assert isinstance(refused, Refusal) and words in refused.reason, (conv, refused)
    dilated = spec_from_conv(nn.Conv2d(4, 6, 3, padding=2, dilation=2))
    refused = add_into_frame(dilated, spec_from_conv(nn.Conv2d(4, 6, 1)))
    assert isinstance(refused, Refusal) and "dilated" in refused.reason


@pytest.mark.parametrize("fc_groups, conv_groups", [(1, 1), (2, 2), (2, 4)])
def test_inject_convs_is_fc_plus_convs(fc_groups: int, conv_groups: int) -> None:
    torch.manual_seed(1)
    c, h, w = 4, 3, 2
    fc = nn.Conv2d(c * h * w, c * h * w, 1, groups=fc_groups, dtype=F64)
    conv = nn.Conv2d(c, c, 3, padding=1, groups=conv_groups, dtype=F64)
    blocks, bias = inject_convs(
        fc.weight.reshape(fc_groups, c * h * w // fc_groups, -1),
        fc.bias,
        [spec_from_conv(conv)],
        h,
        w,
        identities=1,
    )
    p = torch.randn(5, c, h, w, dtype=F64)
    flat = p.reshape(5, -1, 1, 1)
    want = fc(flat).reshape(5, -1) + conv(p).reshape(5, -1) + p.reshape(5, -1)
    got = F.conv2d(flat, blocks.reshape(fc.weight.shape), bias, groups=fc_groups).reshape(5, -1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_inject_convs_refuses_coarser_conv_groups() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=1, dtype=F64)
    with pytest.raises(ValueError, match="refine"):
        inject_convs(torch.zeros(2, 8, 8, dtype=F64), None, [spec_from_conv(conv)], 2, 2)

"""Modules where a naive merge would NOT be exact (:func:`refusal_cases`, :data:`REFUSAL_KINDS`):
the engine must leave the pattern alone and still reproduce the outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import (
    MAX_BATCH,
    Case,
    DeviceLike,
    Shape,
    _fmt,
    _make_case,
    _seeds,
)
from reparam.testing.strategies.norms import _ensure_nonzero_shift

# --------------------------------------------------------------------------------------------
# Refusal cases
# --------------------------------------------------------------------------------------------


class _TwoBranch(nn.Module):
    """``a(x) + b(x)`` with named attributes."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


class _CropOffset(nn.Module):
    """``bn1(kxk_p0(x)) + bn2(conv1x1(x))[..., :n-k+1, ...]``: the 1x1 is cropped top-left."""

    def __init__(self, kxk: nn.Module, one: nn.Module, crop: int) -> None:
        super().__init__()
        self.kxk = kxk
        self.one = one
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.kxk(x)
        b = self.one(x)
        return a + b[:, :, : -self.crop, : -self.crop]


class _OutputPadded(nn.Module):
    """``centred(x) + F.pad(unpadded(x), p)``: the second branch pads its OUTPUT with zeros."""

    def __init__(self, centred: nn.Module, unpadded: nn.Module, pad: int) -> None:
        super().__init__()
        self.centred = centred
        self.unpadded = unpadded
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.centred(x) + F.pad(self.unpadded(x), [self.pad] * 4)


class _SharedSequential(nn.Module):
    """``bn(conv(conv(x)))``: one conv module called twice in a row."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.conv(x)))


class _SharedBranches(nn.Module):
    """``bn1(conv(x)) + bn2(conv(x))``: one conv module called in two branches."""

    def __init__(self, conv: nn.Module, bn1: nn.Module, bn2: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn1 = bn1
        self.bn2 = bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x))


class _ReturnsIntermediate(nn.Module):
    """``y = conv(x); return bn(y) + other(x), y``: the raw conv output is also returned."""

    def __init__(self, conv: nn.Module, bn: nn.Module, other: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.other = other

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        out = self.bn(y) + self.other(x)
        return out, y


class _NonlinearBranch(nn.Module):
    """``relu(bn1(conv_a(x))) + bn2(conv_b(x))``."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.a(x)) + self.b(x)


#: The kinds :func:`refusal_cases` draws from.
REFUSAL_KINDS: tuple[str, ...] = (
    "bn_before_padded_conv",
    "mismatched_stride",
    "crop_offset",
    "output_padded_branch",
    "bn_between_1x1_and_padded_kxk",
    "mixed_padding_modes",
    "shared_conv_sequential",
    "shared_conv_branches",
    "conv_output_returned",
    "bn_no_running_stats",
    "nonlinear_branch",
    "avgpool_exclude_pad",
)


def _cbn(
    ci: int,
    co: int,
    k: int | Shape,
    stride: int = 1,
    padding: int | Shape = 0,
    padding_mode: str = "zeros",
    bias: bool = False,
) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            [
                (
                    "conv",
                    nn.Conv2d(
                        ci,
                        co,
                        k,
                        stride=stride,
                        padding=padding,
                        padding_mode=padding_mode,
                        bias=bias,
                    ),
                ),
                ("bn", nn.BatchNorm2d(co)),
            ]
        )
    )


@st.composite
def refusal_cases(
    draw: st.DrawFn,
    *,
    kinds: Sequence[str] = REFUSAL_KINDS,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
) -> Case:
    """A 2-D module where merging is NOT exact (``Case.refuse`` is ``True``).

    The engine must leave the offending structure alone; the deployed module must still
    match the original outputs. ``description`` starts with ``REFUSE <kind>:`` and says why.
    Kinds (:data:`REFUSAL_KINDS`): BN before a zero-padded conv with non-zero shift;
    branches with different strides (same output size); branches with different centre
    offsets (a cropped 1x1); a branch zero-padding its output; 1x1 conv+BN -> zero-padded
    kxk conv without BN-and-pad; reflect/circular mixed with
    zero padding; one conv called twice in a row or in two branches; a conv output both
    returned and used in the sum; BN with ``track_running_stats=False``; a non-linearity on a
    branch before the sum; avgpool with ``count_include_pad=False`` and padding.
    """
    kind = draw(st.sampled_from(list(kinds)))
    ci = draw(st.integers(1, 8))
    co = draw(st.integers(1, 8))
    batch = draw(st.integers(1, MAX_BATCH))
    seed = draw(_seeds())
    k = draw(st.sampled_from([3, 5]))
    p = k // 2
    stride = draw(st.sampled_from([1, 1, 2]))
    after: Callable[[nn.Module, torch.Generator], None] | None = None
    stride_tag: str | None = None

    def size(lo: int = 1) -> Shape:
        return (draw(st.integers(lo, 12)), draw(st.integers(lo, 12)))

    def same_size(hw: Shape, s: int = 1) -> Shape:
        return tuple((n - 1) // s + 1 for n in hw)

    with seeded(seed):
        if kind == "bn_before_padded_conv":
            hw = size()
            bn = nn.BatchNorm2d(ci)
            module: nn.Module = nn.Sequential(bn, nn.Conv2d(ci, co, k, stride, p))
            out: Any = (batch, co, *same_size(hw, stride))

            def after(m: nn.Module, g: torch.Generator, bn: nn.Module = bn) -> None:
                _ensure_nonzero_shift(bn, g)

            why = (
                "BN before a zero-padded conv with a non-zero shift: the border would need "
                "the shift padded, folding changes border outputs"
            )
        elif kind == "mismatched_stride":
            stride_tag = "stride:mixed"
            hw = size(2)
            kb = tuple(n // 2 + 1 for n in hw)
            module = _TwoBranch(_cbn(ci, co, 1, stride=2), _cbn(ci, co, kb, stride=1))
            out = (batch, co, *((n + 1) // 2 for n in hw))
            why = (
                f"a stride-2 1x1 branch and a stride-1 {_fmt(kb)} branch happen to give the "
                "same output size; they sample different grids"
            )
        elif kind == "crop_offset":
            stride = 1
            hw = size(k)
            module = _CropOffset(_cbn(ci, co, k), _cbn(ci, co, 1), k - 1)
            out = (batch, co, *(n - k + 1 for n in hw))
            why = (
                f"the 1x1 branch is cropped to the top-left, so its centre is offset by "
                f"{p} from the {k}x{k} (p=0) branch; centring it in the kernel is wrong"
            )
        elif kind == "output_padded_branch":
            stride = 1
            hw = size(k)
            module = _OutputPadded(_cbn(ci, co, k, padding=p), _cbn(ci, co, k), p)
            out = (batch, co, *hw)
            why = (
                "one branch zero-pads its OUTPUT (after BN): its border is 0, not a conv of "
                "the zero-padded input, so no single conv computes the sum"
            )
        elif kind == "bn_between_1x1_and_padded_kxk":
            hw = size()
            mid = draw(st.integers(1, 8))
            bn_mid = nn.BatchNorm2d(mid)
            module = _TwoBranch(
                nn.Sequential(
                    OrderedDict(
                        [
                            ("conv1", nn.Conv2d(ci, mid, 1, bias=False)),
                            ("bn1", bn_mid),
                            ("conv2", nn.Conv2d(mid, co, k, stride, p, bias=False)),
                            ("bn2", nn.BatchNorm2d(co)),
                        ]
                    )
                ),
                _cbn(ci, co, 1, stride),
            )
            out = (batch, co, *same_size(hw, stride))

            def after(m: nn.Module, g: torch.Generator, bn: nn.Module = bn_mid) -> None:
                _ensure_nonzero_shift(bn, g)

            why = (
                f"1x1 conv+BN -> zero-padded {k}x{k} conv+BN without DBB's BN-and-pad: the "
                "middle BN's non-zero shift is zero-padded, so the 1x1 cannot be merged into "
                "the kxk (folding the BN into the 1x1 alone is still exact)"
            )
        elif kind == "mixed_padding_modes":
            mode = draw(st.sampled_from(["reflect", "circular"]))
            kb = draw(st.sampled_from([3, 5]))
            hw = size(max(p, kb // 2) + 1)
            module = _TwoBranch(
                _cbn(ci, co, k, stride, p, padding_mode=mode), _cbn(ci, co, kb, stride, kb // 2)
            )
            out = (batch, co, *same_size(hw, stride))
            why = (
                f"a {mode}-padded {k}x{k} branch summed with a zero-padded {kb}x{kb} branch: "
                "the border values differ, one padding mode cannot serve both"
            )
        elif kind == "shared_conv_sequential":
            stride = 1
            hw = size()
            conv = nn.Conv2d(ci, ci, k, 1, p, bias=draw(st.booleans()))
            module = _SharedSequential(conv, nn.BatchNorm2d(ci))
            out = (batch, ci, *hw)
            why = (
                "the same conv module is applied twice in a row; folding the BN into it "
                "would also change its first application"
            )
        elif kind == "shared_conv_branches":
            hw = size()
            conv = nn.Conv2d(ci, co, k, stride, p, bias=draw(st.booleans()))
            module = _SharedBranches(conv, nn.BatchNorm2d(co), nn.BatchNorm2d(co))
            out = (batch, co, *same_size(hw, stride))
            why = (
                "one conv module is called in two branches; folding either BN into the "
                "shared weights in place corrupts the other branch"
            )
        elif kind == "conv_output_returned":
            hw = size()
            conv = nn.Conv2d(ci, co, k, stride, p, bias=draw(st.booleans()))
            module = _ReturnsIntermediate(conv, nn.BatchNorm2d(co), _cbn(ci, co, 1, stride))
            shape = (batch, co, *same_size(hw, stride))
            out = (shape, shape)
            why = (
                "the raw conv output is returned as well as BN-ed and summed; folding the BN "
                "or merging the branches would change the returned tensor"
            )
        elif kind == "bn_no_running_stats":
            batch = 2
            hw = size(2)
            module = _TwoBranch(
                nn.Sequential(
                    nn.Conv2d(ci, co, k, stride, p), nn.BatchNorm2d(co, track_running_stats=False)
                ),
                _cbn(ci, co, 1, stride),
            )
            out = (batch, co, *same_size(hw, stride))
            why = (
                "BatchNorm2d(track_running_stats=False) normalizes with batch statistics "
                "even in eval; there is no fixed affine map to fold"
            )
        elif kind == "nonlinear_branch":
            hw = size()
            module = _NonlinearBranch(_cbn(ci, co, k, stride, p), _cbn(ci, co, 1, stride))
            out = (batch, co, *same_size(hw, stride))
            why = "one branch has a ReLU before the sum; the branches are not linear together"
        elif kind == "avgpool_exclude_pad":
            hw = size()
            module = _TwoBranch(
                nn.Sequential(
                    nn.AvgPool2d(k, stride, p, count_include_pad=False), nn.BatchNorm2d(ci)
                ),
                _cbn(ci, ci, k, stride, p),
            )
            out = (batch, ci, *same_size(hw, stride))
            why = (
                "AvgPool2d(count_include_pad=False) with padding divides by the in-bounds "
                "count at the border; it is not a fixed conv"
            )
        else:
            raise ValueError(f"unknown refusal kind {kind!r}")
    return _make_case(
        module,
        (batch, ci, *hw),
        seed,
        dtype=dtype,
        device=device,
        description=f"REFUSE {kind}: {why}",
        output_shape=out,
        refuse=True,
        tags=("refusal", kind, stride_tag or f"stride:{stride}"),
        after_randomize=after,
    )

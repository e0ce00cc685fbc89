"""Hypothesis strategies for the linear structures of issue 8 (part A), valid by construction.

Each draws a :class:`~reparam.testing.strategies.Case` (float64 unless told otherwise) whose
``refuse`` flag says whether the structure must be left alone:

* :func:`computed_weight_convs` -- ``F.conv1d/2d/3d`` / ``F.linear`` on a weight built in
  forward from parameters (OREPA-style products, ECBSR ``scale * mask``, DBB's
  ``weight + identity``), then a BN; ``refuse``: the weight depends on the input.
* :func:`transposed_conv_norms` -- ConvTranspose1d/2d/3d (groups, stride, output_padding,
  dilation) then a BN or a channel scale; ``refuse``: the conv output is also returned.
* :func:`cropped_branches` -- ACNet with padding < k//2: the 1×k / k×1 branches read a crop
  (slicing or a negative ``F.pad``); ``refuse``: the cropped branch also pads the cropped axis.
* :func:`identity_activation_stacks` -- conv → identity activation → 1×1 conv;
  ``refuse``: the activation is not the identity (slope ≠ 1).
* :func:`linear_heads` -- averaged heads in several styles; ``refuse``: heads read different
  inputs.
* :func:`dbb_avg_blocks` -- DBB blocks whose 1×1 → BN-and-pad → avg-pool branch sits next to
  a k×k conv; ``refuse``: the pool pads with ``count_include_pad=False``.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import _BN, Case, _make_case, _seeds

__all__ = [
    "computed_weight_convs",
    "cropped_branches",
    "dbb_avg_blocks",
    "identity_activation_stacks",
    "linear_heads",
    "transposed_conv_norms",
]

_FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TCONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_DEVICE = torch.device | str


# --------------------------------------------------------------------------------------------
# 1. kernels computed in forward
# --------------------------------------------------------------------------------------------


class ComputedKernelConv(nn.Module):
    """A conv whose kernel is computed in forward (style: OREPA / ECBSR / DBB identity 1x1)."""

    def __init__(self, dims, cin, cout, k, stride, padding, groups, style, from_input):
        super().__init__()
        self.dims, self.stride, self.padding, self.groups = dims, stride, padding, groups
        self.style, self.from_input = style, from_input
        shape = (cout, cin // groups) + (k,) * dims
        self.w_a = nn.Parameter(torch.randn(shape))
        self.w_b = nn.Parameter(torch.randn(cout, cout))
        self.scale = nn.Parameter(torch.randn(cout, 1, *((1,) * dims)))
        self.register_buffer("mask", torch.randn(shape))
        self.bias = nn.Parameter(torch.randn(cout))
        self.bn = _BN[dims](cout)

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "einsum":  # OREPA: a product of parameter tensors
            w = torch.einsum("om,m...->o...", self.w_b, self.w_a)
        elif self.style == "mask":  # ECBSR: a learned scale times a fixed mask
            w = self.scale * self.mask
        else:  # DBB: weight plus a fixed buffer
            w = self.w_a + self.mask
        if self.from_input:
            w = w * x.mean()
        return w

    def forward(self, x):
        y = _FCONV[self.dims](
            x, self.weight(x), self.bias, self.stride, self.padding, 1, self.groups
        )
        return self.bn(y)


class ComputedLinear(nn.Module):
    def __init__(self, fin, fout, from_input):
        super().__init__()
        self.u = nn.Parameter(torch.randn(fout, 3))
        self.v = nn.Parameter(torch.randn(3, fin))
        self.b = nn.Parameter(torch.randn(fout))
        self.from_input = from_input

    def forward(self, x):
        w = self.u @ self.v
        if self.from_input:
            w = w + x.sum()
        return F.linear(x, w, self.b * 2)


@st.composite
def computed_weight_convs(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    seed = draw(_seeds())
    from_input = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else False
    if draw(st.integers(0, 3)) == 0:
        fin, fout = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        with seeded(seed):
            module = ComputedLinear(fin, fout, from_input)
        batch = draw(st.integers(1, 3))
        return _make_case(
            module,
            (batch, fin),
            seed,
            dtype=dtype,
            device=device,
            description=f"F.linear(x, u @ v, 2b) {fin}->{fout} from_input={from_input}",
            output_shape=(batch, fout),
            refuse=from_input,
            tags=("computed_linear",),
        )
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, k // 2, "valid"] + (["same"] if stride == 1 else [])))
    style = draw(st.sampled_from(["einsum", "mask", "identity"]))
    spatial = tuple(draw(st.integers(k, 6 if dims == 3 else 9)) for _ in range(dims))
    with seeded(seed):
        module = ComputedKernelConv(dims, cin, cout, k, stride, padding, groups, style, from_input)
    x_shape = (draw(st.integers(1, 2)), cin, *spatial)
    return _make_case(
        module,
        x_shape,
        seed,
        dtype=dtype,
        device=device,
        description=(
            f"F.conv{dims}d on a {style} kernel {cin}->{cout} k{k} s{stride} p{padding} "
            f"g{groups} + BN, from_input={from_input}"
        ),
        output_shape=None,
        refuse=from_input,
        tags=("computed_conv", style),
    )


# --------------------------------------------------------------------------------------------
# 2. transposed convs followed by a norm
# --------------------------------------------------------------------------------------------


class TransposedNorm(nn.Module):
    def __init__(self, conv, dims, cout, use_scale, also_return):
        super().__init__()
        self.up, self.also_return, self.use_scale = conv, also_return, use_scale
        self.bn = _BN[dims](cout)
        self.gamma = nn.Parameter(torch.randn(1, cout, *((1,) * dims)))

    def forward(self, x):
        y = self.up(x)
        z = y * self.gamma if self.use_scale else self.bn(y)
        return (z, y) if self.also_return else z


@st.composite
def transposed_conv_norms(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, (dilation * (k - 1)) // 2))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    bias = draw(st.booleans())
    use_scale = draw(st.booleans())
    also_return = draw(st.integers(0, 5)) == 0
    seed = draw(_seeds())
    with seeded(seed):
        conv = _TCONV[dims](
            cin,
            cout,
            k,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            bias=bias,
            dilation=dilation,
        )
        module = TransposedNorm(conv, dims, cout, use_scale, also_return)
    spatial = tuple(draw(st.integers(1, 4 if dims == 3 else 6)) for _ in range(dims))
    return _make_case(
        module,
        (draw(st.integers(1, 2)), cin, *spatial),
        seed,
        dtype=dtype,
        device=device,
        description=(
            f"ConvTranspose{dims}d {cin}->{cout} k{k} s{stride} p{padding} op{output_padding} "
            f"d{dilation} g{groups} -> {'scale' if use_scale else 'BN'}"
            f"{' (conv output also returned)' if also_return else ''}"
        ),
        output_shape=None,
        refuse=also_return,
        tags=("transposed",),
    )


# --------------------------------------------------------------------------------------------
# 3. branches reading a crop of the input (ACNet, padding < k // 2)
# --------------------------------------------------------------------------------------------


class CroppedACBlock(nn.Module):
    """ACNet's block when the padding is smaller than k // 2: the 1xk / kx1 branches read a
    crop of the input so that their outputs line up with the square branch."""

    def __init__(self, cin, cout, k, pad, stride, groups, style, bad):
        super().__init__()
        self.crop, self.style = k // 2 - pad, style
        conv = lambda ks, p: nn.Conv2d(cin, cout, ks, stride, p, groups=groups, bias=False)  # noqa: E731
        self.square = nn.Sequential(conv(k, pad), nn.BatchNorm2d(cout))
        # a "bad" vertical branch is 3 wide and pads the axis it also crops: must not merge
        ver = conv((k, 3), (pad, 1)) if bad else conv((k, 1), (pad, 0))
        self.ver = nn.Sequential(ver, nn.BatchNorm2d(cout))
        self.hor = nn.Sequential(conv((1, k), (0, pad)), nn.BatchNorm2d(cout))
        self.bad = bad

    def forward(self, x):
        c = self.crop
        if self.style == "slice":
            v, h = x[:, :, :, c:-c], x[:, :, c:-c, :]
        elif self.style == "ellipsis":
            v, h = x[..., c:-c], x[..., c:-c, :]
        else:
            v, h = F.pad(x, [-c, -c]), F.pad(x, [0, 0, -c, -c])
        return self.square(x) + self.ver(v) + self.hor(h)


@st.composite
def cropped_branches(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    k = draw(st.sampled_from([3, 5, 7]))
    pad = draw(st.integers(0, k // 2 - 1))
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    style = draw(st.sampled_from(["slice", "ellipsis", "negative_pad"]))
    bad = draw(st.integers(0, 4)) == 0
    seed = draw(_seeds())
    with seeded(seed):
        module = CroppedACBlock(cin, cout, k, pad, stride, groups, style, bad)
    h, w = draw(st.integers(k, k + 5)), draw(st.integers(k, k + 5))
    return _make_case(
        module,
        (draw(st.integers(1, 2)), cin, h, w),
        seed,
        dtype=dtype,
        device=device,
        description=(
            f"ACNet k{k} p{pad} s{stride} g{groups} crop {k // 2 - pad} [{style}]"
            f"{' (a branch pads its cropped axis)' if bad else ''}"
        ),
        output_shape=None,
        refuse=bad,
        tags=("crop", style),
    )


# --------------------------------------------------------------------------------------------
# 4. activations that are the identity
# --------------------------------------------------------------------------------------------


class ActSandwich(nn.Module):
    def __init__(self, cin, cmid, cout, k, style, slope):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cmid, 1)
        self.conv2 = nn.Conv2d(cmid, cout, k)
        self.style, self.slope = style, slope
        if style == "module":
            self.act = nn.LeakyReLU(slope)
        elif style == "prelu":
            self.act = nn.PReLU(cmid, init=slope)
        elif style == "flag":  # an Identity chosen by a deploy flag, or the training ReLU
            self.act = nn.Identity() if slope == 1.0 else nn.ReLU()
        self.act_learn = slope

    def forward(self, x):
        y = self.conv1(x)
        if self.style == "functional":
            y = F.leaky_relu(y, self.act_learn)
        elif self.style == "keyword":
            y = F.leaky_relu(y, negative_slope=self.act_learn)
        else:
            y = self.act(y)
        return self.conv2(y)


@st.composite
def identity_activation_stacks(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    cin, cout = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    cmid = draw(st.integers(max(cin, cout), 8))  # wide middle: composing is never slower
    k = draw(st.sampled_from([1, 3]))
    style = draw(st.sampled_from(["module", "prelu", "flag", "functional", "keyword"]))
    identity = draw(st.integers(0, 4)) > 0
    slope = 1.0 if identity else draw(st.sampled_from([0.0, 0.1, 0.5]))
    seed = draw(_seeds())
    with seeded(seed):
        module = ActSandwich(cin, cmid, cout, k, style, slope)
    h, w = draw(st.integers(k, 9)), draw(st.integers(k, 9))
    return _make_case(
        module,
        (draw(st.integers(1, 2)), cin, h, w),
        seed,
        dtype=dtype,
        device=device,
        description=f"conv1x1 -> {style} activation (slope {slope}) -> conv{k}x{k}",
        output_shape=None,
        refuse=not identity,
        tags=("identity_act", style),
    )


# --------------------------------------------------------------------------------------------
# 5. parallel linear heads
# --------------------------------------------------------------------------------------------


class AveragedHeads(nn.Module):
    """RepViT / LeViT-style classifier + distillation head (BN -> Linear each), averaged."""

    def __init__(self, dim, classes, n, style, split):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, classes)) for _ in range(n)
        )
        self.style, self.split = style, split
        self.pre = nn.Linear(dim, dim)

    def forward(self, x):
        xs = [x if not (self.split and i == 1) else self.pre(x) for i in range(len(self.heads))]
        outs = [h(xi) for h, xi in zip(self.heads, xs, strict=True)]
        n = len(outs)
        if self.style == "div":
            return sum(outs) / n
        if self.style == "coef":
            total = outs[0] * (1.0 / n)
            for o in outs[1:]:
                total = total + (1.0 / n) * o
            return total
        if self.style == "stack":
            return torch.stack(outs).mean(0)
        if self.style == "iadd":
            y = outs[0]
            for o in outs[1:]:
                y += o
            return y * (1.0 / n)
        return sum(c * o for c, o in zip((0.25, 0.75, 2.0), outs, strict=False))  # weighted


@st.composite
def linear_heads(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    dim, classes = draw(st.integers(1, 12)), draw(st.integers(1, 10))
    n = draw(st.integers(2, 3))
    style = draw(st.sampled_from(["div", "coef", "stack", "iadd", "weighted"]))
    split = draw(st.integers(0, 4)) == 0
    seed = draw(_seeds())
    with seeded(seed):
        module = AveragedHeads(dim, classes, n, style, split)
    batch = draw(st.integers(1, 3))
    return _make_case(
        module,
        (batch, dim),
        seed,
        dtype=dtype,
        device=device,
        description=f"{n} BN->Linear heads {dim}->{classes} combined [{style}] split={split}",
        output_shape=(batch, classes),
        refuse=split,
        tags=("heads", style),
    )


# --------------------------------------------------------------------------------------------
# 6. DBB's 1x1 -> avg-pool branch next to a kxk conv
# --------------------------------------------------------------------------------------------


class BNAndPad(nn.Module):
    def __init__(self, bn, pad):
        super().__init__()
        self.bn, self.pad = bn, pad

    def forward(self, x):
        y = self.bn(x)
        if self.pad == 0:
            return y
        c = (
            self.bn.bias
            - self.bn.running_mean * self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        ).view(1, -1, 1, 1)
        return F.pad(y - c, [self.pad] * 4) + c


class DBBAvgBlock(nn.Module):
    def __init__(self, cin, cout, k, stride, groups, pooled_pad, include_pad, sum_style):
        super().__init__()
        p = k // 2
        self.origin = nn.Sequential(
            nn.Conv2d(cin, cout, k, stride, p, groups=groups, bias=False), nn.BatchNorm2d(cout)
        )
        self.avg = nn.Sequential()
        self.avg.add_module("conv", nn.Conv2d(cin, cout, 1, groups=groups, bias=False))
        if pooled_pad:  # the pool pads (needs a bias-free 1x1 before it)
            self.avg.add_module("pool", nn.AvgPool2d(k, stride, p, count_include_pad=include_pad))
        else:  # DBB: pad with BN(0) first, then an unpadded pool
            self.avg.add_module("bn", BNAndPad(nn.BatchNorm2d(cout), p))
            self.avg.add_module("pool", nn.AvgPool2d(k, stride, 0))
        self.avg.add_module("avgbn", nn.BatchNorm2d(cout))
        self.one = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False), nn.BatchNorm2d(cout)
        )
        self.sum_style = sum_style

    def forward(self, x):
        parts = [self.origin(x), self.avg(x), self.one(x)]
        if self.sum_style == "iadd":
            out = parts[0]
            out += parts[1]
            out += parts[2]
            return out
        if self.sum_style == "sum":
            return sum(parts)
        return operator.add(operator.add(parts[0], parts[1]), parts[2])


@st.composite
def dbb_avg_blocks(draw, *, dtype=torch.float64, device: _DEVICE = "cpu") -> Case:
    k = draw(st.sampled_from([3, 5]))
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4))
    stride = draw(st.integers(1, 2))
    pooled_pad = draw(st.booleans())
    include_pad = draw(st.integers(0, 4)) > 0 if pooled_pad else True
    style = draw(st.sampled_from(["iadd", "sum", "operator"]))
    seed = draw(_seeds())
    with seeded(seed):
        module = DBBAvgBlock(cin, cout, k, stride, groups, pooled_pad, include_pad, style)
    h, w = draw(st.integers(k, k + 6)), draw(st.integers(k, k + 6))
    return _make_case(
        module,
        (draw(st.integers(1, 2)), cin, h, w),
        seed,
        dtype=dtype,
        device=device,
        description=(
            f"DBB k{k} s{stride} g{groups} {cin}->{cout}: 1x1 -> "
            f"{'avgpool(p)' if pooled_pad else 'BN-and-pad -> avgpool(p=0)'}"
            f" count_include_pad={include_pad} [{style}]"
        ),
        output_shape=None,
        refuse=not include_pad,
        tags=("dbb_avg",),
    )

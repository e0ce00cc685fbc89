"""Hypothesis strategies that build small, valid-by-construction re-parameterizable modules.

Every strategy draws a :class:`Case`: an ``nn.Module`` in eval mode (float64 unless told
otherwise, on the requested device, with randomized BatchNorm statistics and affine params),
an example input and a human-readable ``description``. Channel counts are drawn per group and
multiplied by the number of groups, kernels are centred, strides and padding modes are made
compatible, so every drawn module runs; sizes stay tiny (channels <= 16, spatial <= 12
(<= 6 in 3-D), batch <= 2) so one example runs in milliseconds.

Public strategies:

* :func:`conv_specs` -- :class:`ConvConfig` s (kernel incl. 1xk/kx1, stride, dilation, groups,
  padding incl. ``'same'``, bias, padding_mode).
* :func:`conv_bn`, :func:`linear_bn`, :func:`bn_linear`, :func:`bn_conv` -- two-layer folds.
* :func:`branch_blocks` -- one input, several parallel branches summed, written in varying
  user styles (RepVGG, ACNet, DBB, MobileOne, RepLKNet / UniRepLKNet-like branch sets).
* :func:`block_stacks` -- stacks of branch blocks, optional activations and a classifier head.
* :func:`refusal_cases` -- modules where a merge would NOT be exact (see :data:`REFUSAL_KINDS`).

``Case.refuse`` is ``True`` when the module contains a pattern whose (naive) merge is not
exact, so the engine must leave it alone; in every case the deployed module must still
reproduce the original outputs. ``Case.tags`` lists the features a case contains (handy for
``hypothesis.event`` or for filtering).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from reparam.convspec import ConvSpec, conv_extent, conv_output_size, same_padding, spec_from_conv
from reparam.testing._common import _signed, randomize_norms, seeded

__all__ = [
    "BRANCH_KINDS",
    "MAX_BATCH",
    "MAX_CHANNELS",
    "MAX_SPATIAL",
    "REFUSAL_KINDS",
    "SUM_STYLES",
    "Case",
    "ConvConfig",
    "block_stacks",
    "bn_conv",
    "bn_linear",
    "branch_blocks",
    "check_case",
    "conv_bn",
    "conv_specs",
    "linear_bn",
    "randomize_norms",
    "refusal_cases",
    "seeded",
]

Shape = tuple[int, ...]
DeviceLike = torch.device | str

#: Largest channel count any strategy draws.
MAX_CHANNELS = 16
#: Largest spatial extent per dimension, by number of spatial dims.
MAX_SPATIAL: dict[int, int] = {1: 12, 2: 12, 3: 6}
#: Largest batch size.
MAX_BATCH = 2
#: The ways :func:`branch_blocks` writes the sum of its branches.
SUM_STYLES: tuple[str, ...] = ("plus", "torch_add", "iadd", "sum", "reduce")

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVG: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_GAP: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
_MAX_EFFECTIVE_KERNEL: dict[int, int] = {1: 9, 2: 9, 3: 5}


# --------------------------------------------------------------------------------------------
# Case
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Case:
    """A drawn module with an example input.

    Attributes:
        module: the module, in eval mode, on the requested device and dtype.
        example_input: an input the module accepts (same device and dtype).
        description: what the module contains (and, for refusals, why it must not merge).
        output_shape: the shape ``module(example_input)`` has; a tuple of shapes when the
            module returns a tuple; ``None`` when not stated.
        refuse: ``True`` when the module holds a pattern whose merge would not be exact.
        tags: the features the module contains (branch kinds, sum style, ...).
    """

    module: nn.Module
    example_input: torch.Tensor
    description: str
    output_shape: Shape | tuple[Shape, ...] | None = None
    refuse: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)

    def run(self) -> Any:
        """``module(example_input)`` under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module(self.example_input)

    def __repr__(self) -> str:  # keep hypothesis' falsifying-example output readable
        x = self.example_input
        return (
            f"Case({self.description!r}, input={tuple(x.shape)}, dtype={x.dtype}, "
            f"device={x.device}, refuse={self.refuse})"
        )


def check_case(case: Case) -> Any:
    """Run ``case`` and assert its output(s) have ``case.output_shape``; return the output."""
    out = case.run()
    expected = case.output_shape
    if expected is None:
        return out
    if isinstance(out, torch.Tensor):
        got: Any = tuple(out.shape)
    else:
        got = tuple(tuple(o.shape) for o in out)
    assert got == tuple(expected), f"{case.description}: output shape {got} != {expected}"
    return out


# --------------------------------------------------------------------------------------------
# Small "user" modules the strategies assemble (module level so they pickle and deepcopy)
# --------------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """A conv followed by a BN, as a small custom module with ``conv``/``bn`` attributes."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _NormThenLayer(nn.Module):
    """A BN followed by a linear layer (conv or Linear), with ``bn``/``layer`` attributes."""

    def __init__(self, bn: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.bn = bn
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        return self.layer(out)


class _Scale(nn.Module):
    """Per-channel scale ``x * gamma`` with ``gamma`` of shape ``(C, 1, ..., 1)``."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.gamma = nn.Parameter(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _BNAndPad(nn.Module):
    """BN, then pad by ``pad`` with the value the BN gives a zero input (DBB's BN-and-pad).

    Written with ``F.pad`` (traceable) rather than slice assignment.
    """

    def __init__(self, bn: nn.Module, pad: int, dims: int) -> None:
        super().__init__()
        self.bn = bn
        self.pad = pad
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        if self.pad == 0:
            return out
        bn = self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            fill = bn.bias - bn.running_mean * bn.weight * inv_std
        else:
            fill = -bn.running_mean * inv_std
        fill = fill.view((1, -1) + (1,) * self.dims)
        return F.pad(out - fill, [self.pad] * (2 * self.dims)) + fill


class _Concat(nn.Module):
    """Same-input convs (each optionally followed by a BN) concatenated on channels."""

    def __init__(self, parts: Sequence[nn.Module], bn_after: nn.Module | None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.bn_after = bn_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([p(x) for p in self.parts], dim=1)
        if self.bn_after is not None:
            out = self.bn_after(out)
        return out


class _BlockBase(nn.Module):
    """Parallel branches on one input; subclasses differ only in how they write the sum."""

    def __init__(
        self,
        branches: Sequence[tuple[str, nn.Module]],
        *,
        container: str,
        inline_identity: bool,
        gamma: torch.Tensor | None,
        functional_relu: bool,
        post: nn.Module,
    ) -> None:
        super().__init__()
        if container == "modulelist":
            self.branches = nn.ModuleList([m for _, m in branches])
            self._names: tuple[str, ...] | None = None
        else:
            for name, m in branches:
                self.add_module(name, m)
            self._names = tuple(name for name, _ in branches)
        self.inline_identity = inline_identity
        if gamma is None:
            self.gamma = None
        else:
            self.gamma = nn.Parameter(gamma)
        self.functional_relu = functional_relu
        self.post = post

    def _mods(self) -> list[nn.Module]:
        if self._names is None:
            return list(self.branches)
        return [getattr(self, n) for n in self._names]

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._sum(x)
        if self.gamma is not None:
            out = out + x * self.gamma
        if self.inline_identity:
            out = out + x
        if self.functional_relu:
            out = F.relu(out)
        return self.post(out)


class _PlusBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)
        for m in mods[1:]:
            out = out + m(x)
        return out


class _TorchAddBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)
        for m in mods[1:]:
            out = torch.add(out, m(x))
        return out


class _InplaceAddBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)  # always a fresh tensor (a conv branch): never aliases x
        for m in mods[1:]:
            out += m(x)
        return out


class _SumListBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return sum([m(x) for m in self._mods()])


class _ReduceBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return functools.reduce(operator.add, [m(x) for m in self._mods()])


_BLOCK_CLASSES: dict[str, type[_BlockBase]] = {
    "plus": _PlusBlock,
    "torch_add": _TorchAddBlock,
    "iadd": _InplaceAddBlock,
    "sum": _SumListBlock,
    "reduce": _ReduceBlock,
}


class _GlobalMean(nn.Module):
    """Global average pooling written as ``x.mean(dims)``."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, 2 + self.dims)))


class _Net(nn.Module):
    """A stack with ``forward_features`` and an optional head."""

    def __init__(self, features: Sequence[nn.Module], head: nn.Module | None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(features)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.head is not None:
            x = self.head(x)
        return x


# --------------------------------------------------------------------------------------------
# Internal helpers
# --------------------------------------------------------------------------------------------


def _seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


def _tup(v: int, dims: int) -> Shape:
    return (v,) * dims


def _fmt(t: Sequence[int]) -> str:
    return "x".join(str(v) for v in t)


def _make_case(
    module: nn.Module,
    input_shape: Shape,
    seed: int,
    *,
    dtype: torch.dtype,
    device: DeviceLike,
    description: str,
    output_shape: Shape | tuple[Shape, ...] | None,
    refuse: bool = False,
    tags: Sequence[str] = (),
    after_randomize: Callable[[nn.Module, torch.Generator], None] | None = None,
) -> Case:
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    randomize_norms(module, gen)
    if after_randomize is not None:
        with torch.no_grad():
            after_randomize(module, gen)
    module.eval()
    module.to(device=torch.device(device), dtype=dtype)
    x = torch.randn(input_shape, generator=gen, dtype=torch.float64)
    x = x.to(device=torch.device(device), dtype=dtype)
    return Case(module, x, description, output_shape, refuse, frozenset(tags))


def _bn_desc(bn: nn.Module) -> str:
    bits = [type(bn).__name__, f"eps={bn.eps:g}"]
    if not bn.affine:
        bits.append("no-affine")
    if not bn.track_running_stats:
        bits.append("no-running-stats")
    return f"{bits[0]}({', '.join(bits[1:])})"


def _wrap_conv_bn(conv: nn.Module, bn: nn.Module, style: str) -> nn.Module:
    if style == "sequential":
        return nn.Sequential(conv, bn)
    if style == "named":
        return nn.Sequential(OrderedDict([("conv", conv), ("bn", bn)]))
    return _ConvBN(conv, bn)


_WRAP_STYLES = ("sequential", "named", "custom")


def _ensure_nonzero_shift(bn: nn.Module, gen: torch.Generator, lo: float = 0.2) -> None:
    """Make every channel of ``bn(0)`` (the BN's shift) at least ``lo`` in magnitude."""
    c = bn.num_features
    target = _signed(c, lo, 1.0, gen)
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        bias = target + bn.running_mean.double() * bn.weight.double() * inv_std
        bn.bias.copy_(bias)
    else:  # shift is -mean/std: push the mean away from 0
        mean = -target / inv_std
        bn.running_mean.copy_(mean)


# --------------------------------------------------------------------------------------------
# Conv specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvConfig:
    """Hyper-parameters of one ``nn.ConvNd`` to build (:meth:`build`); its weights, once built,
    are a :class:`reparam.convspec.ConvSpec` (:meth:`spec`), whose geometry helpers this uses.

    ``padding`` is a per-dim tuple of ints or the string ``'same'`` (only with stride 1).
    """

    dims: int
    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    dilation: Shape
    groups: int
    padding: Shape | str
    bias: bool
    padding_mode: str

    def build(self) -> nn.Module:
        """A fresh conv (float32, default init; use inside :func:`seeded` for determinism)."""
        return _CONV[self.dims](
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
            padding_mode=self.padding_mode,
        )

    def spec(self) -> ConvSpec:
        """The engine's view of a freshly built conv: weights and geometry."""
        return spec_from_conv(self.build())

    @property
    def effective_kernel(self) -> Shape:
        """``dilation * (k - 1) + 1`` per dim."""
        return conv_extent(self.kernel_size, self.dilation)

    def pads(self) -> tuple[tuple[int, int], ...]:
        """(before, after) padding per dim, as torch applies it (``'same'`` may be uneven)."""
        if self.padding == "same":
            return same_padding(self.kernel_size, self.dilation)
        assert not isinstance(self.padding, str)
        return tuple((p, p) for p in self.padding)

    def has_padding(self) -> bool:
        return any(a or b for a, b in self.pads())

    def min_input_size(self) -> Shape:
        """The smallest spatial size per dim this conv accepts."""
        sizes = []
        for e, (a, b) in zip(self.effective_kernel, self.pads(), strict=True):
            n = max(1, e - a - b)
            if self.padding_mode == "reflect":
                n = max(n, max(a, b) + 1)
            elif self.padding_mode in ("circular", "replicate"):
                n = max(n, max(a, b))
            sizes.append(n)
        return tuple(sizes)

    def output_size(self, size: Sequence[int]) -> Shape:
        """Spatial output size for spatial input ``size``."""
        return conv_output_size(size, self.kernel_size, self.stride, self.pads(), self.dilation)

    def describe(self) -> str:
        pad = "same" if self.padding == "same" else _fmt(self.padding)
        bits = [
            f"{self.in_channels}->{self.out_channels}",
            f"k={_fmt(self.kernel_size)}",
            f"s={_fmt(self.stride)}",
            f"d={_fmt(self.dilation)}",
            f"g={self.groups}",
            f"p={pad}",
            self.padding_mode,
            "bias" if self.bias else "no-bias",
        ]
        return f"Conv{self.dims}d({', '.join(bits)})"


@st.composite
def conv_specs(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    max_channels: int = MAX_CHANNELS,
    padding_modes: Sequence[str] = ("zeros", "reflect", "circular"),
    allow_same: bool = True,
) -> ConvConfig:
    """Draw a valid :class:`ConvConfig` for a ``dims``-D conv.

    Kernels 1, 2, 3, 5, 7 (effective size capped so inputs stay small), square or asymmetric
    (``1xk`` / ``kx1``; in 3-D ``k`` along a random proper subset of axes); dilation 1-3;
    strides 1-3 (scalar or per dim); groups dense, grouped (2-4) or depthwise (with channel
    multiplier 1 or 2), channels drawn per group; padding 0, centred ints
    ``dilation*(k-1)//2`` or ``'same'`` (stride 1 only); bias or not; ``padding_mode`` from
    ``padding_modes`` when there is padding (``'zeros'`` otherwise).
    """
    if dims not in _CONV:
        raise ValueError(f"dims must be 1, 2 or 3, not {dims}")
    max_eff = _MAX_EFFECTIVE_KERNEL[dims]
    k = draw(st.sampled_from([k for k in (1, 2, 3, 5, 7) if k <= max_eff]))
    kernel = [k] * dims
    if dims > 1 and k > 1 and draw(st.booleans()):
        n_axes = draw(st.integers(1, dims - 1))
        axes = draw(st.permutations(range(dims)))[:n_axes]
        kernel = [k if i in axes else 1 for i in range(dims)]
    dil_choices = [d for d in (1, 1, 2, 3) if d * (k - 1) + 1 <= max_eff] if k > 1 else [1]
    d = draw(st.sampled_from(dil_choices))
    if draw(st.booleans()):
        stride = _tup(draw(st.sampled_from([1, 1, 2, 3])), dims)
    else:
        stride = tuple(draw(st.sampled_from([1, 2])) for _ in range(dims))

    group_kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if group_kind == "dense":
        groups = 1
        cin_g = draw(st.integers(1, max_channels))
        cout_g = draw(st.integers(1, max_channels))
    elif group_kind == "grouped":
        groups = draw(st.sampled_from([g for g in (2, 3, 4) if g <= max_channels]))
        cin_g = draw(st.integers(1, max_channels // groups))
        cout_g = draw(st.integers(1, max_channels // groups))
    else:
        cout_g = draw(st.sampled_from([m for m in (1, 2) if m <= max_channels]))
        groups = draw(st.integers(1, max_channels // cout_g))
        cin_g = 1

    pad_kinds = ["zero", "centred", "centred"]
    if allow_same and all(s == 1 for s in stride):
        pad_kinds.append("same")
    pad_kind = draw(st.sampled_from(pad_kinds))
    padding: Shape | str
    if pad_kind == "zero":
        padding = _tup(0, dims)
    elif pad_kind == "centred":
        padding = tuple(d * (kk - 1) // 2 for kk in kernel)
    else:
        padding = "same"
    spec = ConvConfig(
        dims=dims,
        in_channels=groups * cin_g,
        out_channels=groups * cout_g,
        kernel_size=tuple(kernel),
        stride=stride,
        dilation=_tup(d, dims),
        groups=groups,
        padding=padding,
        bias=draw(st.booleans()),
        padding_mode="zeros",
    )
    if spec.has_padding() and padding_modes:
        modes = list(padding_modes)
        if "zeros" in modes:
            modes += ["zeros"]  # keep zero padding the most common
        spec = dataclasses.replace(spec, padding_mode=draw(st.sampled_from(modes)))
    return spec


def _draw_spatial(draw: st.DrawFn, dims: int, lo: Sequence[int] | None = None) -> Shape:
    hi = MAX_SPATIAL[dims]
    lo = lo or _tup(1, dims)
    return tuple(draw(st.integers(min(l, hi), hi)) for l in lo)


# --------------------------------------------------------------------------------------------
# Two-layer folds
# --------------------------------------------------------------------------------------------


def _draw_bn(draw: st.DrawFn, dims: int, channels: int, *, affine: bool | None = None) -> Any:
    eps = draw(st.sampled_from([1e-5, 1e-3, 1e-1]))
    if affine is None:
        affine = draw(st.sampled_from([True, True, False]))
    return lambda: _BN[dims](channels, eps=eps, affine=affine)


@st.composite
def conv_bn(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
    padding_modes: Sequence[str] = ("zeros", "reflect", "circular"),
) -> Case:
    """A ``ConvNd`` (any :func:`conv_specs`) followed by ``BatchNormNd``: always foldable.

    Written as ``nn.Sequential(conv, bn)``, as a named ``Sequential`` (``conv``/``bn``) or as
    a custom module with ``conv``/``bn`` attributes.
    """
    spec = draw(conv_specs(dims, padding_modes=padding_modes))
    spatial = _draw_spatial(draw, dims, spec.min_input_size())
    batch = draw(st.integers(1, MAX_BATCH))
    style = draw(st.sampled_from(_WRAP_STYLES))
    make_bn = _draw_bn(draw, dims, spec.out_channels)
    seed = draw(_seeds())
    with seeded(seed):
        conv, bn = spec.build(), make_bn()
        module = _wrap_conv_bn(conv, bn, style)
    return _make_case(
        module,
        (batch, spec.in_channels, *spatial),
        seed,
        dtype=dtype,
        device=device,
        description=f"conv_bn[{style}]: {spec.describe()} -> {_bn_desc(bn)}",
        output_shape=(batch, spec.out_channels, *spec.output_size(spatial)),
        tags=("conv_bn", f"wrap:{style}", f"padding_mode:{spec.padding_mode}"),
    )


@st.composite
def linear_bn(
    draw: st.DrawFn,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
) -> Case:
    """``nn.Linear`` followed by ``BatchNorm1d`` on a ``(B, features)`` input: foldable."""
    cin = draw(st.integers(1, MAX_CHANNELS))
    cout = draw(st.integers(1, MAX_CHANNELS))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, MAX_BATCH))
    style = draw(st.sampled_from(["sequential", "custom"]))
    make_bn = _draw_bn(draw, 1, cout)
    seed = draw(_seeds())
    with seeded(seed):
        lin, bn = nn.Linear(cin, cout, bias=bias), make_bn()
        module = nn.Sequential(lin, bn) if style == "sequential" else _ConvBN(lin, bn)
    return _make_case(
        module,
        (batch, cin),
        seed,
        dtype=dtype,
        device=device,
        description=f"linear_bn[{style}]: Linear({cin}->{cout}, bias={bias}) -> {_bn_desc(bn)}",
        output_shape=(batch, cout),
        tags=("linear_bn", f"wrap:{style}"),
    )


@st.composite
def bn_linear(
    draw: st.DrawFn,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
) -> Case:
    """``BatchNorm1d`` followed by ``nn.Linear`` on a ``(B, features)`` input: foldable."""
    cin = draw(st.integers(1, MAX_CHANNELS))
    cout = draw(st.integers(1, MAX_CHANNELS))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, MAX_BATCH))
    style = draw(st.sampled_from(["sequential", "custom"]))
    make_bn = _draw_bn(draw, 1, cin)
    seed = draw(_seeds())
    with seeded(seed):
        bn, lin = make_bn(), nn.Linear(cin, cout, bias=bias)
        module = nn.Sequential(bn, lin) if style == "sequential" else _NormThenLayer(bn, lin)
    return _make_case(
        module,
        (batch, cin),
        seed,
        dtype=dtype,
        device=device,
        description=f"bn_linear[{style}]: {_bn_desc(bn)} -> Linear({cin}->{cout}, bias={bias})",
        output_shape=(batch, cout),
        tags=("bn_linear", f"wrap:{style}"),
    )


@st.composite
def bn_conv(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    padded: bool | None = None,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
    padding_modes: Sequence[str] = ("zeros", "reflect", "circular"),
) -> Case:
    """``BatchNormNd`` followed by a ``ConvNd``.

    * ``padded=False``: the conv has padding 0, folding the BN into it is exact.
    * ``padded=True``: the conv pads. With ``'zeros'`` padding the BN shift (made non-zero
      on every channel) would have to be padded too, so the fold is NOT exact and
      ``Case.refuse`` is set. With reflect/circular padding the padded values are themselves
      BN outputs, so the fold is exact again (``refuse=False``).
    * ``padded=None``: either.
    """
    spec = draw(conv_specs(dims, padding_modes=("zeros",)))
    if padded is None:
        padded = draw(st.booleans())
    if not padded:
        spec = dataclasses.replace(spec, padding=_tup(0, dims), padding_mode="zeros")
    else:
        if not spec.has_padding():
            spec = dataclasses.replace(
                spec,
                padding=tuple(
                    max(1, d * (k - 1) // 2)
                    for k, d in zip(spec.kernel_size, spec.dilation, strict=True)
                ),
            )
        spec = dataclasses.replace(spec, padding_mode=draw(st.sampled_from(list(padding_modes))))
    spatial = _draw_spatial(draw, dims, spec.min_input_size())
    batch = draw(st.integers(1, MAX_BATCH))
    style = draw(st.sampled_from(["sequential", "custom"]))
    make_bn = _draw_bn(draw, dims, spec.in_channels)
    seed = draw(_seeds())
    with seeded(seed):
        bn, conv = make_bn(), spec.build()
        module = nn.Sequential(bn, conv) if style == "sequential" else _NormThenLayer(bn, conv)
    refuse = padded and spec.padding_mode == "zeros"

    def fix(m: nn.Module, gen: torch.Generator) -> None:
        if refuse:
            _ensure_nonzero_shift(bn, gen)

    if refuse:
        why = (
            "REFUSE: BN before a zero-padded conv with a non-zero BN shift; the padded "
            "border would need the shift, so folding the BN into the conv is not exact"
        )
    elif padded:
        why = (
            f"BN before a {spec.padding_mode}-padded conv: the padded values are BN outputs "
            "too, so the fold is exact"
        )
    else:
        why = "BN before an unpadded conv: the fold is exact"
    return _make_case(
        module,
        (batch, spec.in_channels, *spatial),
        seed,
        dtype=dtype,
        device=device,
        description=f"bn_conv[{style}]: {_bn_desc(bn)} -> {spec.describe()}; {why}",
        output_shape=(batch, spec.out_channels, *spec.output_size(spatial)),
        refuse=refuse,
        tags=("bn_conv", "padded" if padded else "unpadded", f"padding_mode:{spec.padding_mode}"),
        after_randomize=fix,
    )


# --------------------------------------------------------------------------------------------
# Branch blocks
# --------------------------------------------------------------------------------------------

_CONV_KINDS = ("kxk", "asym", "dilated", "seq_1x1_kxk", "seq_dbb_pad", "seq_1x1_avg", "concat")
_IDENTITY_KINDS = ("identity", "bn", "scale", "avgpool")
#: Every branch kind :func:`branch_blocks` may draw.
BRANCH_KINDS: tuple[str, ...] = _CONV_KINDS + _IDENTITY_KINDS


@dataclass
class _DrawnBlock:
    module: nn.Module
    out_channels: int
    out_spatial: Shape
    description: str
    tags: list[str]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _draw_block(
    draw: st.DrawFn,
    *,
    dims: int,
    in_channels: int,
    spatial: Shape,
    padding_modes: Sequence[str],
    strides: Sequence[int],
    max_branches: int,
    allow_activation: bool,
    kinds: Sequence[str],
) -> _DrawnBlock:
    """Draw and build (under a drawn seed) one branch block."""
    cin = in_channels
    mode = draw(st.sampled_from(list(padding_modes)))
    stride = draw(st.sampled_from(list(strides)))
    s = _tup(stride, dims)
    groups = draw(st.sampled_from(_divisors(cin)))
    if stride == 1 and draw(st.booleans()):
        cout = cin
    else:
        cout = groups * draw(st.integers(1, MAX_CHANNELS // groups))
    square = cin == cout

    # Largest padding each spatial dim tolerates under this padding mode.
    if mode == "reflect":
        max_pad = min(spatial) - 1
    elif mode == "circular":
        max_pad = min(spatial)
    else:
        max_pad = 10**9
    big = (1, 3, 5, 7) if dims < 3 else (1, 3, 5)
    kernels = [k for k in big if k // 2 <= max_pad]
    main_k = draw(st.sampled_from(kernels))
    dilated_opts = [
        (k, d)
        for k in (3, 5)
        for d in (2, 3)
        if d * (k - 1) // 2 <= min(max_pad, 6 if dims < 3 else 2)
    ]

    available = [k for k in kinds if k in BRANCH_KINDS]
    conv_kinds = [k for k in available if k in _CONV_KINDS]
    if "asym" in conv_kinds and (dims == 1 or main_k < 3):
        conv_kinds.remove("asym")
    if "dilated" in conv_kinds and not dilated_opts:
        conv_kinds.remove("dilated")
    if mode != "zeros":
        conv_kinds = [k for k in conv_kinds if k not in ("seq_dbb_pad", "seq_1x1_avg")]
    if "concat" in conv_kinds and (groups != 1 or cout < 2):
        conv_kinds.remove("concat")
    if not conv_kinds:
        conv_kinds = ["kxk"]
    # identity / BN / scale need in == out and stride 1; avgpool needs in == out and zeros.
    id_kinds = [
        k
        for k in available
        if k in _IDENTITY_KINDS and square and (stride == 1 if k != "avgpool" else mode == "zeros")
    ]
    if dims == 3 and min(spatial) < 3:  # AvgPool3d rejects inputs smaller than its kernel
        id_kinds = [k for k in id_kinds if k != "avgpool"]

    first = draw(st.sampled_from(conv_kinds))
    rest = draw(
        st.lists(
            st.sampled_from(conv_kinds + id_kinds), min_size=0, max_size=max(0, max_branches - 1)
        )
    )
    branch_kinds = [first, *rest]

    style = draw(st.sampled_from(list(SUM_STYLES)))
    container = draw(st.sampled_from(["modulelist", "attributes"]))
    name_prefix = draw(st.sampled_from(["branch", "rbr_", "path_", "b"]))
    seed = draw(_seeds())
    tags: list[str] = [
        f"style:{style}",
        f"container:{container}",
        f"padding_mode:{mode}",
        f"stride:{stride}",
    ]
    descs: list[str] = []
    named: list[tuple[str, nn.Module]] = []
    inline_identity = False
    gamma: torch.Tensor | None = None
    Conv, Avg = _CONV[dims], _AVG[dims]

    def conv(
        ci: int,
        co: int,
        k: Shape | int,
        *,
        stride: Shape | int = s,
        padding: Shape | int = 0,
        dilation: int = 1,
        g: int = groups,
        bias: bool | None = None,
    ) -> nn.Module:
        if bias is None:
            bias = draw(st.booleans())
        return Conv(
            ci,
            co,
            k,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=g,
            bias=bias,
            padding_mode=mode,
        )

    def bn(c: int) -> nn.Module:
        return _draw_bn(draw, dims, c)()

    def conv_bn_(c: nn.Module, b: nn.Module) -> nn.Module:
        return _wrap_conv_bn(c, b, draw(st.sampled_from(_WRAP_STYLES)))

    def maybe_sprinkle(m: nn.Module) -> nn.Module:
        extra = draw(st.sampled_from(["none", "none", "none", "dropout", "identity"]))
        if extra == "dropout":
            return nn.Sequential(m, nn.Dropout(p=0.25))
        if extra == "identity":
            return nn.Sequential(nn.Identity(), m)
        return m

    with seeded(seed):
        for i, kind in enumerate(branch_kinds):
            name = f"{name_prefix}{i}_{kind}"
            tags.append(kind)
            if kind == "kxk":
                k = draw(st.sampled_from(kernels))
                m = conv_bn_(conv(cin, cout, k, padding=k // 2), bn(cout))
                descs.append(f"conv{k}x{k}+BN")
            elif kind == "asym":
                n_axes = draw(st.integers(1, dims - 1))
                axes = draw(st.permutations(range(dims)))[:n_axes]
                ks = tuple(main_k if a in axes else 1 for a in range(dims))
                m = conv_bn_(conv(cin, cout, ks, padding=tuple(v // 2 for v in ks)), bn(cout))
                descs.append(f"conv{_fmt(ks)}+BN")
            elif kind == "dilated":
                k, d = draw(st.sampled_from(dilated_opts))
                m = conv_bn_(conv(cin, cout, k, padding=d * (k - 1) // 2, dilation=d), bn(cout))
                descs.append(f"dilated conv{k}x{k} d={d}+BN")
            elif kind == "seq_1x1_kxk":
                k = draw(st.sampled_from(kernels))
                mid = groups * draw(st.integers(1, MAX_CHANNELS // groups))
                first_conv = conv(cin, mid, 1, stride=1, bias=False)
                m = nn.Sequential(
                    first_conv, conv_bn_(conv(mid, cout, k, padding=k // 2), bn(cout))
                )
                descs.append(f"conv1x1({cin}->{mid}, no bias) -> conv{k}x{k}+BN")
            elif kind == "seq_dbb_pad":
                k = draw(st.sampled_from(kernels))
                mid = groups * draw(st.integers(1, MAX_CHANNELS // groups))
                m = nn.Sequential(
                    OrderedDict(
                        [
                            ("conv1", conv(cin, mid, 1, stride=1, bias=False)),
                            ("bn1", _BNAndPad(bn(mid), k // 2, dims)),
                            ("conv2", conv(mid, cout, k, padding=0)),
                            ("bn2", bn(cout)),
                        ]
                    )
                )
                descs.append(
                    f"conv1x1({cin}->{mid})+BN -> pad {k // 2} with BN(0) -> "
                    f"conv{k}x{k}(p=0)+BN (DBB)"
                )
            elif kind == "seq_1x1_avg":
                k = draw(st.sampled_from([v for v in kernels if v > 1] or [1]))
                m = nn.Sequential(
                    OrderedDict(
                        [
                            ("conv", conv(cin, cout, 1, stride=1, bias=False)),
                            ("bn", _BNAndPad(bn(cout), k // 2, dims)),
                            ("avg", Avg(k, stride=stride, padding=0)),
                            ("avgbn", bn(cout)),
                        ]
                    )
                )
                descs.append(f"conv1x1+BN -> pad with BN(0) -> avgpool{k}(p=0)+BN (DBB)")
            elif kind == "concat":
                n_parts = draw(st.integers(2, min(3, cout)))
                cuts = sorted(
                    draw(
                        st.sets(
                            st.integers(1, cout - 1), min_size=n_parts - 1, max_size=n_parts - 1
                        )
                    )
                )
                sizes = [b - a for a, b in zip([0, *cuts], [*cuts, cout], strict=True)]
                bn_after = draw(st.booleans())
                parts, pdesc = [], []
                for c in sizes:
                    k = draw(st.sampled_from(kernels))
                    pc = conv(cin, c, k, padding=k // 2)
                    parts.append(pc if bn_after else conv_bn_(pc, bn(c)))
                    pdesc.append(f"conv{k}x{k}->{c}" + ("" if bn_after else "+BN"))
                m = _Concat(parts, bn(cout) if bn_after else None)
                descs.append(f"cat[{', '.join(pdesc)}]" + ("+BN" if bn_after else ""))
            elif kind == "identity":
                if not inline_identity and draw(st.booleans()):
                    inline_identity = True
                    descs.append("x (inline)")
                    continue
                m = nn.Identity()
                descs.append("identity")
            elif kind == "bn":
                m = bn(cin)
                descs.append("BN (identity branch)")
            elif kind == "scale":
                g_shape = (cin,) + (1,) * dims
                gamma_init = torch.empty(g_shape).uniform_(0.5, 1.5) * torch.where(
                    torch.rand(g_shape) < 0.5, -1.0, 1.0
                )
                if gamma is None and draw(st.booleans()):
                    gamma = gamma_init
                    descs.append("x * gamma (inline parameter)")
                    continue
                m = _Scale(gamma_init)
                descs.append("x * gamma")
            elif kind == "avgpool":
                k = draw(st.sampled_from([3, 5] if dims < 3 else [3]))
                pool = Avg(k, stride=stride, padding=k // 2, count_include_pad=True)
                m = nn.Sequential(pool, bn(cin)) if draw(st.booleans()) else _ConvBN(pool, bn(cin))
                descs.append(f"avgpool{k}(p={k // 2}, count_include_pad)+BN")
            else:  # pragma: no cover - kinds are filtered above
                raise AssertionError(kind)
            if i > 0 or style != "iadd":
                m = maybe_sprinkle(m)
            named.append((name, m))

        if style != "iadd" and len(named) > 1:
            order = draw(st.permutations(range(len(named))))
            named = [named[j] for j in order]
        post_kind = "none"
        functional_relu = False
        post: nn.Module = nn.Identity()
        if allow_activation:
            post_kind = draw(
                st.sampled_from(["none", "relu", "relu_fn", "relu_dropout", "dropout", "identity"])
            )
            if post_kind == "relu":
                post = nn.ReLU()
            elif post_kind == "relu_fn":
                functional_relu = True
            elif post_kind == "relu_dropout":
                post = nn.Sequential(nn.ReLU(), nn.Dropout(0.1))
            elif post_kind == "dropout":
                post = nn.Dropout(0.1)
        else:
            post_kind = draw(st.sampled_from(["none", "dropout", "identity"]))
            if post_kind == "dropout":
                post = nn.Dropout(0.1)
        module = _BLOCK_CLASSES[style](
            named,
            container=container,
            inline_identity=inline_identity,
            gamma=gamma,
            functional_relu=functional_relu,
            post=post,
        )
    if post_kind.startswith("relu"):
        tags.append("activation")
    out_spatial = tuple((n - 1) // stride + 1 for n in spatial)
    desc = (
        f"branch_block[{style}, {container}] {dims}-D in={cin} out={cout} g={groups} "
        f"s={stride} {mode}: "
        + " + ".join(descs)
        + ("" if post_kind == "none" else f" -> {post_kind}")
    )
    return _DrawnBlock(module, cout, out_spatial, desc, tags)


@st.composite
def branch_blocks(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
    max_branches: int = 6,
    padding_modes: Sequence[str] = ("zeros",),
    strides: Sequence[int] = (1, 1, 2),
    allow_activation: bool = True,
    kinds: Sequence[str] = BRANCH_KINDS,
) -> Case:
    """One input, several parallel branches summed: exactly mergeable into one conv (+act).

    Branch kinds (:data:`BRANCH_KINDS`, restrict with ``kinds``):

    * ``kxk``: centred kxk conv+BN for k in 1, 3, 5, 7 (may repeat, MobileOne-style);
    * ``asym``: 1xk / kx1 conv+BN (ACNet);
    * ``dilated``: dilated 3x3 / 5x5 conv+BN (UniRepLKNet);
    * ``seq_1x1_kxk``: 1x1 conv (no bias) -> kxk conv+BN;
    * ``seq_dbb_pad``: 1x1 conv+BN -> pad with the BN's zero-response -> kxk conv (p=0)+BN
      (DBB's BN-and-pad, zero padding only);
    * ``seq_1x1_avg``: DBB's avg path, 1x1 conv+BN-and-pad -> avgpool (p=0) -> BN;
    * ``concat``: same-input convs concatenated on channels (groups 1 only);
    * identity-like, only when in == out channels and stride 1: ``identity`` (``nn.Identity``
      or ``x`` in forward), ``bn`` (BN-only, RepVGG), ``scale`` (``x * gamma``, gamma an
      ``nn.Parameter`` of shape ``(C, 1, ..)``, as a module or inline); ``avgpool``
      (``AvgPoolNd(k, stride, k//2, count_include_pad=True)``+BN, in == out, any stride).

    At least one conv branch is always present. All branches share stride, groups and
    ``padding_mode`` (drawn from ``padding_modes``; non-zero modes drop the DBB pad/avg kinds
    and the identity-likes). The sum is written in one of :data:`SUM_STYLES` (``a + b``,
    ``torch.add``, ``out += b``, ``sum([...])``, ``functools.reduce(operator.add, ...)``),
    branches in an ``nn.ModuleList`` or as named attributes, conv+BN as ``Sequential`` or a
    custom ``conv``/``bn`` module, eval Dropout/Identity sprinkled in, and, if
    ``allow_activation``, an optional ReLU (module or ``F.relu``) after the sum.
    """
    cin = draw(st.integers(1, MAX_CHANNELS))
    spatial = _draw_spatial(draw, dims)
    batch = draw(st.integers(1, MAX_BATCH))
    block = _draw_block(
        draw,
        dims=dims,
        in_channels=cin,
        spatial=spatial,
        padding_modes=padding_modes,
        strides=strides,
        max_branches=max_branches,
        allow_activation=allow_activation,
        kinds=kinds,
    )
    seed = draw(_seeds())
    return _make_case(
        block.module,
        (batch, cin, *spatial),
        seed,
        dtype=dtype,
        device=device,
        description=block.description,
        output_shape=(batch, block.out_channels, *block.out_spatial),
        tags=("branch_block", *block.tags),
    )


_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "relu6": nn.ReLU6,
}


@st.composite
def block_stacks(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
    max_depth: int = 4,
    max_branches: int = 4,
    padding_modes: Sequence[str] = ("zeros",),
    head: bool | None = None,
) -> Case:
    """A stack of 1..``max_depth`` :func:`branch_blocks`, optional activations between them,
    and (if ``head``, drawn when ``None``) a global-pool + ``Linear`` head, optionally with a
    ``BatchNorm1d`` after (``linear_bn``) or before (``bn_linear``) the Linear.

    Written as a flat ``nn.Sequential`` or as a net with ``forward_features``. Consecutive
    blocks without an activation between them are NOT one exact conv in general (the
    first block's bias gets zero-padded by the second), so only per-block merges are exact.
    """
    depth = draw(st.integers(1, max_depth))
    c = draw(st.integers(1, 8))
    spatial = _draw_spatial(draw, dims)
    batch = draw(st.integers(1, MAX_BATCH))
    in_shape = (batch, c, *spatial)
    layers: list[nn.Module] = []
    descs: list[str] = []
    tags: list[str] = ["block_stack"]
    sp = spatial
    for i in range(depth):
        block = _draw_block(
            draw,
            dims=dims,
            in_channels=c,
            spatial=sp,
            padding_modes=padding_modes,
            strides=(1, 1, 2),
            max_branches=max_branches,
            allow_activation=True,
            kinds=BRANCH_KINDS,
        )
        layers.append(block.module)
        descs.append(f"[{block.description}]")
        tags.extend(block.tags)
        c, sp = block.out_channels, block.out_spatial
        if i < depth - 1:
            act = draw(st.sampled_from([None, None, *_ACTS]))
            if act is not None:
                layers.append(_ACTS[act]())
                descs.append(act)
    if head is None:
        head = draw(st.booleans())
    out_shape: Shape = (batch, c, *sp)
    head_mod: nn.Module | None = None
    seed = draw(_seeds())
    if head:
        n_cls = draw(st.integers(1, 10))
        head_kind = draw(st.sampled_from(["linear", "linear_bn", "bn_linear"]))
        pool_kind = draw(st.sampled_from(["adaptive", "mean"]))
        with seeded(seed):
            if pool_kind == "adaptive":
                pool: list[nn.Module] = [_GAP[dims](1), nn.Flatten(1)]
            else:
                pool = [_GlobalMean(dims)]
            if head_kind == "linear":
                tail: list[nn.Module] = [nn.Linear(c, n_cls)]
            elif head_kind == "linear_bn":
                tail = [nn.Linear(c, n_cls), nn.BatchNorm1d(n_cls)]
            else:
                tail = [nn.BatchNorm1d(c), nn.Linear(c, n_cls)]
            head_mod = nn.Sequential(*pool, *tail)
        descs.append(f"head[{pool_kind} pool, {head_kind}({c}->{n_cls})]")
        tags.append(f"head:{head_kind}")
        out_shape = (batch, n_cls)
    container = draw(st.sampled_from(["sequential", "net"]))
    if container == "sequential":
        module: nn.Module = nn.Sequential(*layers, *([head_mod] if head_mod is not None else []))
    else:
        module = _Net(layers, head_mod)
    tags.append(f"stack:{container}")
    return _make_case(
        module,
        in_shape,
        seed,
        dtype=dtype,
        device=device,
        description=f"block_stack[{container}, depth={depth}]: " + " -> ".join(descs),
        output_shape=out_shape,
        tags=tags,
    )


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

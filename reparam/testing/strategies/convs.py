"""Convolutions: :class:`ConvConfig` (the hyper-parameters of one ``nn.ConvNd``) and
:func:`conv_specs`, which draws valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st
from torch import nn

from reparam.convspec import ConvSpec, conv_extent, conv_output_size, same_padding, spec_from_conv
from reparam.testing.strategies.case import (
    _CONV,
    _MAX_EFFECTIVE_KERNEL,
    MAX_CHANNELS,
    MAX_SPATIAL,
    Shape,
    _fmt,
    _tup,
)

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

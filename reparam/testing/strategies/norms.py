"""Two-layer folds: a norm after or before a conv / linear (:func:`conv_bn`, :func:`linear_bn`,
:func:`bn_linear`, :func:`bn_conv`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import _signed, seeded
from reparam.testing.strategies.case import (
    _BN,
    MAX_BATCH,
    MAX_CHANNELS,
    Case,
    DeviceLike,
    _make_case,
    _seeds,
    _tup,
)
from reparam.testing.strategies.convs import _draw_spatial, conv_specs
from reparam.testing.strategies.modules import _ConvBN, _NormThenLayer


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


def _linear_and_norm(
    draw: st.DrawFn, norm_first: bool, dtype: torch.dtype, device: DeviceLike
) -> Case:
    """``nn.Linear`` and ``BatchNorm1d`` (after it, or before it when ``norm_first``) on a
    ``(B, features)`` input, as ``nn.Sequential`` or a custom module."""
    cin = draw(st.integers(1, MAX_CHANNELS))
    cout = draw(st.integers(1, MAX_CHANNELS))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, MAX_BATCH))
    style = draw(st.sampled_from(["sequential", "custom"]))
    make_bn = _draw_bn(draw, 1, cin if norm_first else cout)
    seed = draw(_seeds())
    with seeded(seed):
        if norm_first:
            bn, lin = make_bn(), nn.Linear(cin, cout, bias=bias)
            layers, custom = (bn, lin), _NormThenLayer
        else:
            lin, bn = nn.Linear(cin, cout, bias=bias), make_bn()
            layers, custom = (lin, bn), _ConvBN
        module = nn.Sequential(*layers) if style == "sequential" else custom(*layers)
    linear = f"Linear({cin}->{cout}, bias={bias})"
    name, parts = (
        ("bn_linear", (_bn_desc(bn), linear))
        if norm_first
        else ("linear_bn", (linear, _bn_desc(bn)))
    )
    return _make_case(
        module,
        (batch, cin),
        seed,
        dtype=dtype,
        device=device,
        description=f"{name}[{style}]: {parts[0]} -> {parts[1]}",
        output_shape=(batch, cout),
        tags=(name, f"wrap:{style}"),
    )


@st.composite
def linear_bn(
    draw: st.DrawFn,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
) -> Case:
    """``nn.Linear`` followed by ``BatchNorm1d`` on a ``(B, features)`` input: foldable."""
    return _linear_and_norm(draw, False, dtype, device)


@st.composite
def bn_linear(
    draw: st.DrawFn,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
) -> Case:
    """``BatchNorm1d`` followed by ``nn.Linear`` on a ``(B, features)`` input: foldable."""
    return _linear_and_norm(draw, True, dtype, device)


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

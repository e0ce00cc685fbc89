"""Shared helpers for the ``reparam.transforms`` tests: tolerances, random tensors, convs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import Tensor

from reparam.convspec import conv_extent

TOL64 = 1e-9
TOL32 = 1e-5
F64 = torch.float64

# The ``device`` fixture is function scoped but constant across examples: safe to reuse.
with_device = settings(suppress_health_check=[*settings.default.suppress_health_check,
                                              HealthCheck.function_scoped_fixture])
seeds = st.integers(0, 2**31 - 1)
some_nd = st.integers(1, 3)


def fewer(n: int) -> settings:
    """``with_device`` with at most ``n`` examples (for expensive properties)."""
    return settings(with_device, max_examples=min(n, settings.default.max_examples))


def rel_err(expected: Tensor, actual: Tensor) -> float:
    """``max|a - b| / max|a|`` computed in float64 (absolute when ``a`` is all zeros)."""
    assert expected.shape == actual.shape, (tuple(expected.shape), tuple(actual.shape))
    a, b = expected.to(F64), actual.to(F64)
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    scale = a.abs().max().item() if a.numel() else 0.0
    return diff / scale if scale > 0 else diff


def assert_close(expected: Tensor, actual: Tensor, tol: float = TOL64) -> None:
    err = rel_err(expected, actual)
    assert err <= tol, f"relative error {err:.3e} > {tol:.0e}"


def assert_on(t: Tensor, device: torch.device, dtype: torch.dtype) -> None:
    assert t.device.type == device.type, f"{t.device} != {device}"
    assert t.dtype == dtype, f"{t.dtype} != {dtype}"


@contextlib.contextmanager
def strict_defaults() -> Iterator[None]:
    """Make the default dtype float16 and the default device ``meta`` while a transform runs:
    any tensor created without an explicit dtype / device breaks the result."""
    old_dtype, old_device = torch.get_default_dtype(), torch.get_default_device()
    torch.set_default_dtype(torch.float16)
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(old_device)
        torch.set_default_dtype(old_dtype)


class Rand:
    """Seeded random tensors, drawn on the CPU in float64 and moved to ``device``/``dtype``."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype = F64) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.device, self.dtype = device, dtype

    def normal(self, *shape: int) -> Tensor:
        t = torch.randn(shape, generator=self.gen, dtype=F64)
        return t.to(device=self.device, dtype=self.dtype)

    def positive(self, *shape: int) -> Tensor:
        t = torch.rand(shape, generator=self.gen, dtype=F64) + 0.25
        return t.to(device=self.device, dtype=self.dtype)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class ConvCase:
    """A valid-by-construction conv and its input size (``nd == 0`` means a linear layer);
    the engine's conv-with-weights is :class:`reparam.convspec.ConvSpec`."""

    nd: int
    groups: int
    in_ch: int
    out_ch: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    size: tuple[int, ...]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_ch, self.in_ch // self.groups, *self.kernel)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.in_ch, *self.size)

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Sequence[int] | int = 1,
         padding: Sequence[int] | int = 0, dilation: Sequence[int] | int = 1,
         groups: int = 1) -> Tensor:
    """``F.conv{1,2,3}d`` chosen by the weight rank; ``F.linear`` for 2-D weights."""
    nd = weight.dim() - 2
    if nd == 0:
        return F.linear(x, weight, bias)
    return _CONV[nd](x, weight, bias, stride, padding, dilation, groups)


@st.composite
def conv_specs(draw, nd: st.SearchStrategy[int] = some_nd, max_groups: int = 3,
               max_per_group: int = 3, max_k: int = 3, padded: bool = True,
               strided: bool = True, dilated: bool = True, groups: int | None = None,
               ) -> ConvCase:
    """Draw per-group channel counts and multiply by ``groups`` so the conv is valid."""
    n = draw(nd)
    g = groups if groups is not None else draw(st.integers(1, max_groups))
    if n == 0:
        g = 1
    in_ch = g * draw(st.integers(1, max_per_group))
    out_ch = g * draw(st.integers(1, max_per_group))
    dims = st.lists(st.integers(1, max_k), min_size=n, max_size=n)
    kernel = tuple(draw(dims))
    stride = tuple(draw(st.integers(1, 2)) if strided else 1 for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) if dilated else 1 for _ in range(n))
    padding = tuple(draw(st.integers(0, k // 2 + 1)) if padded else 0 for k in kernel)
    size = tuple(max(1, e - 2 * p) + draw(st.integers(0, 3))
                 for e, p in zip(conv_extent(kernel, dilation), padding, strict=True))
    return ConvCase(n, g, in_ch, out_ch, kernel, stride, padding, dilation, size)


def channel_view(v: Tensor, nd: int) -> Tensor:
    """Reshape a per-channel vector to broadcast over ``(N, C, *spatial)``."""
    return v.reshape(1, -1, *([1] * nd))


def lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def check_float32(fn, *args, device: torch.device, **kwargs) -> None:
    """``fn`` on float32 tensors returns float32 tensors on ``device`` that match ``fn`` on
    the same values up-cast to float64 within ``TOL32``."""
    def up(a):
        return a.to(F64) if isinstance(a, Tensor) else a

    out32 = fn(*args, **kwargs)
    out64 = fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})
    pairs = zip(out32, out64, strict=True) if isinstance(out32, tuple) else [(out32, out64)]
    for a32, a64 in pairs:
        if isinstance(a32, Tensor):
            assert_on(a32, device, torch.float32)
            assert_close(a64, a32, TOL32)
        else:
            assert a32 == a64

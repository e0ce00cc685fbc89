"""Hypothesis strategies: per-channel affines across layout changes, and norms shared by
several consumers (the ``norm_after_layout`` / ``norm_into_consumers`` rules).

Each strategy draws a :class:`~reparam.testing.strategies.Case` whose ``refuse`` flag says
whether the norm must stay (a per-position affine after a flatten; a reader that is not
linear in the normalized value; a zero-padded conv reading a shifted value). Sizes are tiny.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import Case, _make_case, _seeds
from reparam.testing.strategies.norms import _ensure_nonzero_shift

__all__ = ["norm_after_layout_cases", "shared_norm_cases"]


class _Permute(nn.Module):
    """A layout module written three ways (method, function, movedim)."""

    def __init__(self, dims: tuple[int, ...], style: str) -> None:
        super().__init__()
        self.dims, self.style = dims, style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "method":
            return x.permute(*self.dims)
        if self.style == "function":
            return torch.permute(x, self.dims)
        if self.dims == (0, 3, 1, 2):
            return x.movedim(-1, 1)
        if self.dims == (0, 2, 3, 1):
            return x.movedim(1, -1)
        return x.transpose(1, 2)


class _Flatten(nn.Module):
    def __init__(self, start: int) -> None:
        super().__init__()
        self.start = start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start)


@st.composite
def norm_after_layout_cases(draw, *, dtype=torch.float64, device="cpu") -> Case:
    """A conv / linear, then layout ops, then a batch norm.

    Kinds: ``nhwc_linear`` (UniRepLKNet FFN: Linear on NHWC, permute to NCHW, BatchNorm2d),
    ``tokens_linear`` (Linear on (N, L, C), transpose, BatchNorm1d), ``conv_flatten2``
    (conv, flatten(2), BatchNorm1d(C)), ``conv_flatten_1x1`` (conv to a 1×1 map, flatten,
    BatchNorm1d(C)), and the refusal ``conv_flatten_positions`` (flatten, then
    BatchNorm1d(C·h·w) with statistics that differ per position: not a conv's affine).
    """
    kind = draw(st.sampled_from(["nhwc_linear", "tokens_linear", "conv_flatten2",
                                 "conv_flatten_1x1", "conv_flatten_positions"]))
    style = draw(st.sampled_from(["method", "function", "move"]))
    cin, cout = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    batch = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    seed = draw(_seeds())
    refuse = False
    with seeded(seed):
        if kind == "nhwc_linear":
            module = nn.Sequential(_Permute((0, 2, 3, 1), style), nn.Linear(cin, cout),
                                   _Permute((0, 3, 1, 2), style), nn.BatchNorm2d(cout))
            shape, out = (batch, cin, h, w), (batch, cout, h, w)
        elif kind == "tokens_linear":
            module = nn.Sequential(nn.Linear(cin, cout), _Permute((0, 2, 1), "method"),
                                   nn.BatchNorm1d(cout))
            shape, out = (batch, h, cin), (batch, cout, h)
        elif kind == "conv_flatten2":
            module = nn.Sequential(nn.Conv2d(cin, cout, k), _Flatten(2), nn.BatchNorm1d(cout))
            shape, out = (batch, cin, h + k - 1, w + k - 1), (batch, cout, h * w)
        elif kind == "conv_flatten_1x1":
            module = nn.Sequential(nn.Conv2d(cin, cout, (h, w)), _Flatten(1),
                                   nn.BatchNorm1d(cout))
            shape, out = (batch, cin, h, w), (batch, cout)
        else:
            h, w = max(h, 2), w
            module = nn.Sequential(nn.Conv2d(cin, cout, k), nn.Flatten(),
                                   nn.BatchNorm1d(cout * h * w))
            shape, out = (batch, cin, h + k - 1, w + k - 1), (batch, cout * h * w)
            refuse = True
    return _make_case(module, shape, seed, dtype=dtype, device=device,
                      description=f"norm_after_layout[{kind}, {style}]", output_shape=out,
                      refuse=refuse, tags=(kind,))


class _SharedNorm(nn.Module):
    """One norm, several readers; outputs flattened and concatenated."""

    def __init__(self, norm: nn.Module, readers: list[nn.Module], layouts: list[str],
                 blocker: str) -> None:
        super().__init__()
        self.norm = norm
        self.readers = nn.ModuleList(readers)
        self.layouts, self.blocker = layouts, blocker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        outs = []
        for reader, layout in zip(self.readers, self.layouts, strict=True):
            if layout == "channels_last":
                outs.append(reader(y.movedim(1, -1)).flatten(1))
            else:
                outs.append(reader(y).flatten(1))
        if self.blocker == "gate":
            outs.append((y * y.mean(dim=1, keepdim=True)).flatten(1))
        elif self.blocker == "residual":
            outs.append((x + y).flatten(1))
        return torch.cat(outs, dim=1)


@st.composite
def shared_norm_cases(draw, *, dtype=torch.float64, device="cpu") -> Case:
    """A BatchNorm2d read by 2–4 convs / linears (Inception-style heads, a pre-norm in front
    of parallel projections), some through a channels-last permute. Refused (the norm must
    stay) when a reader is a gate or a residual add, or a conv that zero-pads (the BN shift
    is made non-zero)."""
    c = draw(st.integers(1, 5))
    h, w = draw(st.integers(3, 5)), draw(st.integers(3, 5))
    n = draw(st.integers(2, 4))
    blocker = draw(st.sampled_from(["none", "none", "none", "gate", "residual"]))
    seed = draw(_seeds())
    readers, layouts, zero_padded = [], [], False
    specs = []
    for _ in range(n):
        kind = draw(st.sampled_from(["conv", "conv_padded", "linear"]))
        o = draw(st.integers(1, 4))
        if kind == "linear":
            specs.append(("linear", o, None))
        else:
            k = draw(st.sampled_from([1, 3])) if kind == "conv" else 3
            mode = "zeros" if kind == "conv" else draw(
                st.sampled_from(["zeros", "reflect", "circular", "replicate"]))
            zero_padded |= kind == "conv_padded" and mode == "zeros"
            specs.append((kind, o, (k, mode)))
    with seeded(seed):
        for kind, o, extra in specs:
            if kind == "linear":
                readers.append(nn.Linear(c, o))
                layouts.append("channels_last")
            else:
                k, mode = extra
                pad = 1 if kind == "conv_padded" else 0
                readers.append(nn.Conv2d(c, o, k, padding=pad, padding_mode=mode))
                layouts.append("nchw")
        module = _SharedNorm(nn.BatchNorm2d(c), readers, layouts, blocker)
    refuse = blocker != "none" or zero_padded
    kinds = ",".join(s[0] for s in specs)
    return _make_case(module, (2, c, h, w), seed, dtype=dtype, device=device,
                      description=f"shared_norm[{kinds}; blocker={blocker}]",
                      output_shape=None, refuse=refuse, tags=(f"blocker:{blocker}",),
                      after_randomize=lambda m, g: _ensure_nonzero_shift(m.norm, g))

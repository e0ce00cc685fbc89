"""Hypothesis strategies: an FC on partitions plus branches affine in its input, written in
several styles (the ``affine_branch_fc`` rule; RepMLP, arXiv:2105.01883; RepMLPNet,
arXiv:2112.11081).

Partition styles: ``view_permute`` (RepMLPNet: ``reshape(-1, C, hp, h, wp, w).permute``),
``unfold`` (``F.unfold`` with stride = kernel), ``tensor_unfold`` (``x.unfold(2, h,
h).unfold(3, w, w)`` in the branch, ``view/permute`` for the FC). The FC is an ``nn.Linear``
or a grouped ``1×1`` conv (RepMLPNet's channel-shared ``fc3``). Branches: convs (any kernel,
zero / reflect / circular padding, groups), batch norms, average pools, scaled identities.
``Case.refuse`` marks a branch that is not row-wise: a conv over the *whole* map before
partitioning (it mixes partitions), or a ReLU in a branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import Case, _make_case, _seeds

__all__ = ["affine_branch_cases"]


class _Branch(nn.Module):
    """A branch on partitions (R, C, h, w) -> (R, O, h, w)."""

    def __init__(self, kind: str, c: int, o: int, k: int, mode: str, groups: int) -> None:
        super().__init__()
        self.kind = kind
        if kind in ("conv", "conv_bn", "whole_map_conv"):
            self.conv = nn.Conv2d(c, o, k, padding=k // 2, padding_mode=mode, groups=groups)
        if kind == "conv_bn":
            self.bn = nn.BatchNorm2d(o)
        if kind == "relu_conv":
            self.conv = nn.Conv2d(c, o, 1)
        if kind == "bn":
            self.bn = nn.BatchNorm2d(c)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return self.conv(p)
        if self.kind == "conv_bn":
            return self.bn(self.conv(p))
        if self.kind == "bn":
            return self.bn(p)
        if self.kind == "pool":
            return F.avg_pool2d(p, 3, 1, 1, count_include_pad=False)
        if self.kind == "scaled":
            return 0.5 * p
        return self.conv(torch.relu(p))


class _PartitionFC(nn.Module):
    def __init__(self, c: int, o: int, h: int, w: int, fc_kind: str, style: str,
                 branches: list[_Branch], whole: nn.Module | None) -> None:
        super().__init__()
        self.c, self.o, self.h, self.w, self.style, self.fc_kind = c, o, h, w, style, fc_kind
        n_in, n_out = c * h * w, o * h * w
        self.fc = nn.Linear(n_in, n_out) if fc_kind == "linear" else nn.Conv2d(n_in, n_out, 1)
        self.branches = nn.ModuleList(branches)
        self.whole = whole

    def partitions(self, x: torch.Tensor) -> torch.Tensor:
        hp, wp = x.size(2) // self.h, x.size(3) // self.w
        p = x.reshape(-1, self.c, hp, self.h, wp, self.w).permute(0, 2, 4, 1, 3, 5)
        return p.reshape(-1, self.c, self.h, self.w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        if self.style == "unfold":
            rows = F.unfold(x, (self.h, self.w), stride=(self.h, self.w)).transpose(1, 2)
            parts = rows.reshape(-1, self.c, self.h, self.w)
        else:
            parts = self.partitions(x)
        flat = parts.reshape(-1, self.c * self.h * self.w)
        y = self.fc(flat) if self.fc_kind == "linear" else self.fc(flat[:, :, None, None])
        y = y.reshape(-1, self.o, self.h, self.w)
        if self.style == "tensor_unfold":  # the branch partitions x its own way
            parts = x.unfold(2, self.h, self.h).unfold(3, self.w, self.w)
            parts = parts.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.c, self.h, self.w)
        for branch in self.branches:
            y = y + branch(parts)
        if self.whole is not None:  # a conv over the whole map, then partitioned: mixes
            y = y + self.partitions(self.whole(x))
        if self.style == "unfold":
            cols = y.reshape(n, -1, self.o * self.h * self.w).transpose(1, 2)
            return F.fold(cols, (height, width), (self.h, self.w), stride=(self.h, self.w))
        hp, wp = height // self.h, width // self.w
        y = y.reshape(n, hp, wp, self.o, self.h, self.w).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(n, self.o, height, width)


@st.composite
def affine_branch_cases(draw, *, dtype=torch.float64, device="cpu") -> Case:
    """An FC on ``h×w`` partitions of an ``(N, C, hp·h, wp·w)`` map plus 1–3 branches."""
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 3)), draw(st.integers(2, 3))
    hp, wp = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    fc_kind = draw(st.sampled_from(["linear", "conv1x1"]))
    style = draw(st.sampled_from(["view_permute", "unfold", "tensor_unfold"]))
    kinds = draw(st.lists(st.sampled_from(["conv", "conv_bn", "bn", "pool", "scaled"]),
                          min_size=1, max_size=3))
    bad = draw(st.sampled_from(["none", "none", "none", "relu", "whole_map"]))
    same = draw(st.booleans())
    square = same or bad == "whole_map" or any(k in ("bn", "pool", "scaled") for k in kinds)
    o = c if square else draw(
        st.integers(1, 3))
    seed = draw(_seeds())
    specs = []
    for kind in kinds:
        k = draw(st.sampled_from([1, 3]))
        mode = draw(st.sampled_from(["zeros", "reflect", "circular"]))
        groups = c if (o == c and draw(st.booleans())) else 1
        if mode == "reflect" and (h < 2 or w < 2):
            mode = "zeros"
        specs.append((kind, k, mode, groups))
    with seeded(seed):
        branches = [_Branch(kind, c, o, k, mode, g) for kind, k, mode, g in specs]
        if bad == "relu":
            branches.append(_Branch("relu_conv", c, o, 1, "zeros", 1))
        whole = nn.Conv2d(c, o, 3, padding=1) if bad == "whole_map" else None
        module = _PartitionFC(c, o, h, w, fc_kind, style, branches, whole)
    refuse = bad == "relu" or (bad == "whole_map" and hp * wp > 1)
    desc = (f"affine_branch[{style}, {fc_kind}, C={c}, O={o}, {h}x{w} x {hp}x{wp}]: "
            f"{specs} bad={bad}")
    return _make_case(module, (draw(st.integers(1, 2)), c, hp * h, wp * w), seed, dtype=dtype,
                      device=device, description=desc, output_shape=None, refuse=refuse,
                      tags=(style, fc_kind, f"bad:{bad}"))

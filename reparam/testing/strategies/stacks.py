"""Stacks of branch blocks with optional activations and a classifier head
(:func:`block_stacks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.branches import BRANCH_KINDS, _draw_block
from reparam.testing.strategies.case import (
    _GAP,
    MAX_BATCH,
    Case,
    DeviceLike,
    Shape,
    _make_case,
    _seeds,
)
from reparam.testing.strategies.convs import _draw_spatial
from reparam.testing.strategies.modules import _GlobalMean, _Net

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

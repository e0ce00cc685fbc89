r"""Fold a per-channel affine that precedes a linear layer into it.

.. math:: W (s \odot x + t) + b = (W \operatorname{diag} s)\, x + (W t + b)

The affine may reach the linear through ops that commute with a per-channel affine: adaptive
average pooling, a spatial mean, and a channel-major flatten (then each channel's ``s, t``
repeat over its positions). Always exact: a linear has no padding. This covers a head's
``BN → global pool → flatten → Linear`` and RepMLP's Global Perceptron (BN after pooling,
folded into FC1; arXiv:2105.01883).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.graph.scope import ScopeView
from reparam.patterns import Affine, Bindings, Into, Module, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold, linear_with
from reparam.transforms import fold_affine_before, repeat_affine

_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_POOL_FUNCTIONS = {
    torch.nn.functional.adaptive_avg_pool1d,
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_avg_pool3d,
}
_RESHAPES = {"flatten", "reshape", "view"}


def commutes_with_channel_affine(node: Node, ctx: ScopeView) -> bool:
    """Ops after which a per-channel affine (dim 1) can be moved: averaging over positions and
    channel-major reshapes that keep dim 0 and put channels first."""
    if node.op == "call_module":
        module = ctx.module(node.target)
        if isinstance(module, nn.Flatten):
            return _channel_major_flatten(node, ctx)
        return isinstance(module, _POOLS)
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        return True
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op in ("call_method", "call_function") and name == "mean":
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = (dims,) if isinstance(dims, int) else dims
        src = ctx.shape(node.args[0])
        return (
            src is not None
            and isinstance(dims, (tuple, list))
            and len(dims) > 0
            and all(isinstance(d, int) and d % len(src) >= 2 for d in dims)
        )
    if node.op in ("call_method", "call_function") and name in _RESHAPES:
        return _channel_major_flatten(node, ctx)
    return False


def _channel_major_flatten(node: Node, ctx: ScopeView) -> bool:
    """(N, C, *s) → (N, C·prod(s)): keeps dim 0, channels outermost (by the shapes)."""
    src, dst = ctx.shape(node.args[0]), ctx.shape(node)
    return (
        src is not None
        and dst is not None
        and len(src) >= 2
        and len(dst) == 2
        and src[0] == dst[0]
        and dst[1] == math.prod(src[1:])
    )


class FoldNormBeforeLinear(PatternRule):
    """Replaces norm → (pool / flatten) → linear with one linear."""

    name = "norm_linear"
    summary = "batch norm or per-channel scale before a linear (through pooling / flatten)"
    pattern = "linear(flatten(pool(affine(x))))"
    refuses_when = (
        "the norm uses batch statistics",
        "an intermediate tensor is used elsewhere",
        "shapes are unknown (pass example_inputs) or the flatten is not channel-major",
    )
    graph_pattern = Into(
        Affine().bind("affine"),
        Module(nn.Linear).bind("linear"),
        via=Where(commutes_with_channel_affine, "average pooling or a channel-major flatten"),
    ).bind("path")

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, linear_node, linear = m["affine"], m["linear"], m.module("linear")
        if isinstance(affine, Refusal):
            return affine
        channels = affine.scale.numel()
        feature_shape = ctx.shape(linear_node.args[0])
        if feature_shape is None:
            return Refusal("shape entering the linear is unknown; pass example_inputs")
        if not affine.fits_rank(len(ctx.shape(affine.node) or ())):
            return Refusal("the scale does not broadcast over dim 1")
        if len(feature_shape) != 2:
            return Refusal(
                f"the linear sees a rank-{len(feature_shape)} tensor; the affine "
                "acts on dim 1, the linear on the last dim"
            )
        if linear.in_features % channels:
            return Refusal("the linear's features are not a whole number of channels")
        scale, shift = affine.scale, affine.shift
        repeats = linear.in_features // channels
        if repeats > 1:
            scale, shift = repeat_affine(scale, shift, repeats)
        weight, bias = fold_affine_before(
            linear.weight.detach(),
            None if linear.bias is None else linear.bias.detach(),
            scale.to(linear.weight),
            shift.to(linear.weight),
        )
        return ChainPlan(
            linear_node,
            affine,
            linear_with(linear, weight, bias),
            f"{affine.kind} folded into the following linear",
            m["path"],
        )

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=True)

r"""Fold a batch norm that follows a linear layer into it.

.. math:: s\,(W x + b) + t = (s W) x + (s b + t)

Exact when the norm acts on the linear's output features, i.e. the linear's output is
2-D ``(N, F)`` (BatchNorm1d on a 3-D tensor normalises dim 1, which is not the feature dim):
the tensor rank comes from shape propagation on ``example_inputs``.
"""

from __future__ import annotations

from torch import nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.graph.views import AffineView, channel_affine, single_user
from reparam.rules.base import Rewrite, Rule, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold, linear_with
from reparam.transforms import fold_affine_after


class FoldNormAfterLinear(Rule):
    """Replaces linear → BatchNorm1d with one linear."""

    name = "linear_norm"
    summary = "linear followed by a batch norm over its output features"
    pattern = "batch_norm(linear(x)), x of shape (N, F)"
    refuses_when = (
        "the norm uses batch statistics",
        "the linear output is not 2-D (or its rank is unknown: pass example_inputs)",
        "the linear output is used by another node too",
    )

    def match(self, node: Node, ctx: RuleContext) -> AffineView | Refusal | None:
        affine = channel_affine(node, ctx.root)
        if affine is None or (not isinstance(affine, Refusal) and affine.kind == "channel_scale"):
            return None
        source = node.args[0]
        if not (
            isinstance(source, Node)
            and source.op == "call_module"
            and isinstance(ctx.module(source.target), nn.Linear)
        ):
            return None
        return affine

    def check(self, affine: AffineView | Refusal, ctx: RuleContext) -> ChainPlan | Refusal:
        if isinstance(affine, Refusal):
            return affine
        lin_node = affine.input
        linear = ctx.module(lin_node.target)
        if not single_user(lin_node):
            return Refusal(
                f"output of linear '{ctx.qualified(lin_node.target)}' is also used elsewhere"
            )
        rank = ctx.rank(lin_node)
        if rank is None:
            return Refusal("rank of the linear's output is unknown; pass example_inputs")
        if rank != 2:
            return Refusal(
                f"linear output has rank {rank}: the norm acts on dim 1, not on the features"
            )
        if affine.scale.numel() != linear.out_features:
            return Refusal("norm and linear disagree on the feature count")
        weight, bias = fold_affine_after(
            linear.weight.detach(),
            None if linear.bias is None else linear.bias.detach(),
            affine.scale.to(linear.weight),
            affine.shift.to(linear.weight),
        )
        return ChainPlan(
            lin_node, affine, linear_with(linear, weight, bias), f"{affine.kind} folded into linear"
        )

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=False)

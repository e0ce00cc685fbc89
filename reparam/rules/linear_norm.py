r"""Fold a batch norm that follows a linear layer into it.

.. math:: s\,(W x + b) + t = (s W) x + (s b + t)

Exact when the norm acts on the linear's output features, i.e. the norm's input is
2-D ``(M, F)`` (directly, or after reshapes that keep the features last, as LeViT's
``LinearNorm`` flattens the tokens into the batch). BatchNorm1d on a 3-D tensor normalises
dim 1, which is not the feature dim: refused. The rank comes from the example inputs.
"""

from __future__ import annotations

from torch import nn

from reparam.errors import Refusal
from reparam.graph.views import single_user
from reparam.patterns import Affine, Bindings, Call, Module, Through
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold, linear_with
from reparam.transforms import fold_affine_after


class FoldNormAfterLinear(PatternRule):
    """Replaces linear → BatchNorm1d with one linear."""

    name = "linear_norm"
    summary = "linear followed by a batch norm over its output features"
    pattern = "batch_norm(reshape*(linear(x))), the norm's input of shape (M, F)"
    refuses_when = (
        "the norm uses batch statistics",
        "the linear output is not 2-D (or its rank is unknown: pass example_inputs)",
        "the linear output is used by another node too",
    )
    # the linear may reach the norm through reshapes of its leading dims
    # (LeViT's LinearNorm: ``bn(linear(x).flatten(0, 1)).reshape_as(...)``)
    graph_pattern = Affine(
        Through(Call(("flatten", "reshape", "view")), Module(nn.Linear).bind("linear")),
        kinds=("batch_norm", "functional_batch_norm"),
    ).bind("affine")

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, lin_node, linear = m["affine"], m["linear"], m.module("linear")
        if isinstance(affine, Refusal):
            return affine
        if not single_user(lin_node):
            return Refusal(
                f"output of linear '{ctx.qualified(lin_node.target)}' is also used elsewhere"
            )
        norm_input = affine.node.args[0]
        shape = ctx.shape(norm_input)
        if shape is None:
            return Refusal("rank of the norm's input is unknown; pass example_inputs")
        if len(shape) != 2:
            return Refusal(
                f"the norm sees a rank-{len(shape)} tensor: it acts on dim 1, not on the "
                "linear's features"
            )
        node = norm_input
        while node is not lin_node:  # every reshape in between keeps the feature dim last
            node_shape = ctx.shape(node)
            if node_shape is None or node_shape[-1] != linear.out_features:
                return Refusal("a reshape between linear and norm moves the feature dim")
            node = node.args[0]
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

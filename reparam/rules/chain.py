"""Shared machinery of the chain folds (a per-channel affine next to a conv or a linear).

The four chain rules differ only in their pattern; the graph surgery is the same: the
linear op gets the folded weights, the affine node disappears, and the scope's forward is
rewritten from the graph. When both modules are used only here, the folded layer takes the
old layer's path (so checkpoint keys stay where they were) and the norm is removed; another
method that still calls the norm then fails loudly rather than silently computing something
else. Otherwise the folded layer goes to a fresh path and the old modules stay for their
other users.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.fx import Node

from reparam.graph.views import AffineView
from reparam.rules.base import Rewrite, RuleContext, absmax


@dataclass
class ChainPlan:
    op_node: Node  # the conv / linear call that stays
    affine: AffineView  # the affine that disappears
    new_module: nn.Module  # the folded conv / linear
    detail: str
    through: tuple[Node, ...] = ()  # shape ops between affine and op (affine-before only)


def apply_chain_fold(plan: ChainPlan, ctx: RuleContext, rule: str, affine_first: bool) -> Rewrite:
    """Put the folded layer in place and take the affine out: ``affine(reshape*(op(x)))``
    becomes ``reshape*(op'(x))`` (``affine_first=False``), ``op(through(affine(x)))`` becomes
    ``op'(through(x))``; either way the affine node's uses now read its input."""
    op_node, affine, tx = plan.op_node, plan.affine, ctx.tx
    before = absmax(ctx.module(op_node.target).weight)
    norm_is_module = affine.node.op == "call_module"
    exclusive = ctx.exclusive_reason(op_node) is None and (
        not norm_is_module or ctx.exclusive_reason(affine.node) is None
    )
    tx.substitute(op_node, plan.new_module, stem="reparam_fused", exclusive=exclusive)
    if norm_is_module and exclusive:
        # Identity for the moment; once the forward is rewritten the unused norm is deleted,
        # so another method that still calls it fails loudly instead of silently computing
        # something else (the op it was folded into may carry other folds too).
        tx.place(affine.node.target, nn.Identity())
    site = ctx.site_name(affine.node)
    tx.redirect(affine.node, affine.input)
    tx.erase_unused([affine.node])
    return Rewrite(
        rule=rule,
        site=site,
        detail=plan.detail,
        weight_absmax_before=before,
        weight_absmax_after=absmax(plan.new_module.weight),
        # Always rewrite the forward: the user's code may read the norm's attributes (its
        # statistics, ``affine``) besides calling it, and that code must not run on the
        # substituted modules. Substitution still keeps paths and other methods valid.
        forward_changed=True,
    )


def linear_with(linear: nn.Linear, weight, bias) -> nn.Linear:
    new = nn.Linear(
        linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    new.bias.data.copy_(bias)
    return new

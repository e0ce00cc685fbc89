r"""Merge a conv followed by another conv (DBB's 1×1 → k×k) into one conv.

.. math:: W_2 * (W_1 * x + b_1) + b_2 = (W_2 \star W_1) * x + (b_2 + \textstyle\sum W_2 b_1)

where :math:`W_2 \star W_1` contracts the middle channels and fully correlates the kernels
(size ``k1 + k2 - 1``). Source: DBB transform III (arXiv:2103.13425).

Exact when the first conv has stride 1, dilation 1 and no padding, the second has dilation
1, and the border is the same: if the second conv zero-pads, it pads the *first conv's
output*, so the first conv must be 1×1 (then padding the input instead is the same) and,
unless its bias is zero, the padded border would see the bias where the original saw 0:
refused. A reflect/replicate/circular pad commutes with a 1×1 conv, so those are exact.
Declined when the merged conv costs more multiply-adds (a narrow middle: ``C_mid`` much
smaller than ``C_in``), unless ``allow_slower``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.fx import Node

from reparam import cost
from reparam.convspec import ConvSpec, conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.views import single_user
from reparam.patterns import CONV, Bindings, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms import compose_sequential


@dataclass
class _Plan:
    first: Node
    second: Node
    module: nn.Module
    before: int
    after: int


class MergeSequentialConvs(PatternRule):
    """Replaces conv → conv with one conv where exact and not slower."""

    name = "sequential_convs"
    summary = "conv (1×1, or unpadded k×k) followed by a conv → one conv (DBB)"
    pattern = "conv2(conv1(x))"
    refuses_when = (
        "the first conv strides, dilates or pads",
        "the second conv zero-pads after a first conv with a bias, or after a k×k conv",
        "the first conv's output is used elsewhere",
        "the merged conv would cost more multiply-adds (narrow middle)",
    )
    graph_pattern = Module(is_plain_conv, CONV.bind("first"), label="conv").bind("second")

    def check(self, m: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        first_node, second_node = m["first"], m["second"]
        if not single_user(first_node):
            return Refusal(f"output of '{ctx.qualified(first_node.target)}' is used elsewhere")
        a, b = spec_from_conv(m.module("first")), spec_from_conv(m.module("second"))
        if a.dims != b.dims:
            return Refusal("convs of different spatial rank")
        if any(s != 1 for s in a.stride) or any(d != 1 for d in a.dilation + b.dilation):
            return Refusal("the first conv strides or either conv dilates")
        if any(a.is_padded):
            return Refusal("the first conv pads its input")
        pointwise = all(k == 1 for k in a.kernel_size)
        if any(b.is_padded):
            if not pointwise:
                return Refusal(
                    "the second conv pads the output of a k×k conv: no single conv "
                    "reproduces that border"
                )
            if b.padding_mode == "zeros" and a.bias is not None and bool((a.bias != 0).any()):
                return Refusal(
                    "the second conv zero-pads after a first conv with a bias: the "
                    "border would see the bias"
                )
        weight, bias, groups = compose_sequential(
            a.weight, a.bias, a.groups, b.weight, b.bias, b.groups
        )
        merged = ConvSpec(weight, bias, b.stride, b.padding, b.dilation, groups, b.padding_mode)
        before, after, exact = cost.compare(
            [(a, ctx.call_shapes(first_node)), (b, ctx.call_shapes(second_node))],
            [(merged, ctx.call_shapes(second_node))],
        )
        if after > before and not ctx.allow_slower:
            return Refusal(cost.slower_reason(before, after, exact))
        try:
            module = conv_from_spec(merged)
        except ValueError as err:
            return Refusal(str(err))
        return _Plan(first_node, second_node, module, before, after)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        site = ctx.site_name(plan.second)
        before = absmax(ctx.module(plan.first.target).weight, ctx.module(plan.second.target).weight)
        exclusive = ctx.exclusive_reason(plan.second) is None
        near = ctx.owner_path(plan.second)
        ctx.tx.substitute(
            plan.second, plan.module, stem="reparam_conv", exclusive=exclusive, near=near
        )
        ctx.tx.set_input(plan.second, 0, plan.first.args[0])
        ctx.tx.erase_unused([plan.first])
        return Rewrite(
            self.name,
            site,
            "composed conv → conv",
            plan.before,
            plan.after,
            before,
            absmax(plan.module.weight),
        )

r"""Merge convs of one input whose outputs are concatenated along channels into one conv.

.. math:: [W_1 * x + b_1;\; W_2 * x + b_2] = [W_1; W_2] * x + [b_1; b_2]

after placing the kernels in one frame (zero-padded at aligned offsets). Source: DBB
transform IV (depth concatenation, arXiv:2103.13425), Inception-style multi-kernel blocks.
Exact when the convs share stride and output grid and pad alike; only ungrouped convs are
stacked (grouped ones would interleave their groups). Declined when zero-padding the smaller
kernels costs more multiply-adds than the separate convs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import Node

from reparam import cost
from reparam.convspec import conv_from_spec, spec_from_conv
from reparam.errors import Refusal
from reparam.patterns import CONV, Bindings, Call, ListOf
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms.align import concat_specs


@dataclass
class _Plan:
    cat: Node
    convs: list[Node]
    module: nn.Module
    macs_before: int = 0
    macs_after: int = 0


def _along_channels(node: Node) -> bool:
    """a concatenation along dim 1 (channels)"""
    return (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) == 1


class MergeConcatConvs(PatternRule):
    """Replaces cat([conv_i(x)], dim=1) with one conv."""

    name = "concat_convs"
    summary = "same-input convs concatenated along channels → one conv"
    pattern = "cat([conv_1(x), conv_2(x), ...], dim=1)"
    refuses_when = (
        "the convs read different inputs or are grouped",
        "they differ in stride, output grid or padding mode",
        "a conv output is used elsewhere",
        "padding the smaller kernels would cost more multiply-adds (unless allow_slower)",
    )
    graph_pattern = Call(
        (torch.cat, torch.concat),
        ListOf(CONV.bind("conv"), min_len=2).bind("parts"),
        where=_along_channels,
        names=("tensors",),
    ).bind("cat")

    def check(self, m: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        cat, parts = m["cat"], list(m["parts"])
        if len({id(p.args[0]) for p in parts}) != 1:
            return Refusal("the concatenated convs read different inputs")
        if len(set(parts)) != len(parts) or any(len(p.users) != 1 for p in parts):
            return Refusal("a conv output is used elsewhere")
        specs = [spec_from_conv(item.module("conv")) for item in m.each("parts")]
        merged = concat_specs(specs)
        if isinstance(merged, Refusal):
            return merged
        before, after, exact = cost.compare(
            [(spec, ctx.call_shapes(p)) for spec, p in zip(specs, parts, strict=True)],
            [(merged, ctx.call_shapes(cat))],
        )
        if after > before and not ctx.allow_slower:
            return Refusal(cost.slower_reason(before, after, exact))
        try:
            module = conv_from_spec(merged)
        except ValueError as err:
            return Refusal(str(err))
        return _Plan(cat, parts, module, before, after)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        site = ctx.site_name(plan.cat)
        before = absmax(*(ctx.module(p.target).weight for p in plan.convs))
        path = ctx.fresh_path(ctx.owner_path(plan.cat), "reparam_concat_conv")
        for p in plan.convs:
            if ctx.exclusive_reason(p) is None:
                path = p.target
                break
        ctx.set_module(path, plan.module)
        new = ctx.call(path, (plan.convs[0].args[0],), before=plan.cat)
        plan.cat.replace_all_uses_with(new)
        ctx.erase_unused([plan.cat])
        return Rewrite(
            self.name,
            site,
            f"stacked {len(plan.convs)} convs",
            plan.macs_before,
            plan.macs_after,
            before,
            absmax(plan.module.weight),
        )

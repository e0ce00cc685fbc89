r"""Merge a conv followed by a conv whose kernel acts on the other axes (``k×1`` then
``1×k``, RepNeXt's depthwise ``1×k → k×1``, arXiv:2406.16004) into one ``k×k`` conv.

The maths and exactness conditions (strides, dilations, paddings on different axes, the
first conv's bias at the second's zero-padded border) are in
:mod:`reparam.transforms.perpendicular`.

Cost: one ``k_h×k_w`` conv costs ``k_h k_w`` taps per channel pair where the pair costs
``k_h + k_w`` (depthwise ``7×7``: 49 vs 14): merging alone is *more* multiply-adds, so it is
declined (``allow_slower=True`` forces it), like RepNeXt's own conversion, which keeps its
``1×11 → 11×1`` branch as two convs. When the pair is a summand next to a conv on the same
input whose kernel frame holds the merged kernel (RepNeXt's ``RepDWConvM``: a ``7×7`` beside
``1×7 → 7×1`` and ``1×5 → 5×1``), the merged kernel is added into that conv in the same step
(RepVGG-style, arXiv:2101.03697): the pair's MACs disappear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
from torch.fx import Node

from reparam import cost
from reparam.convspec import ConvSpec, conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.views import is_add, single_user, value_users
from reparam.rules.base import Rewrite, Rule, RuleContext, absmax
from reparam.transforms import dilate_kernel, pad_kernel, regroup_kernel
from reparam.transforms.perpendicular import compose_perpendicular, perpendicular_geometry


@dataclass
class _Plan:
    first: Node
    second: Node
    module: nn.Module
    before: int
    after: int
    partner: Node | None = None  # the parallel conv that absorbs the pair
    add: Node | None = None  # the add that sums the pair in (dropped)
    detail: str = ""




class MergePerpendicularConvs(Rule):
    """Replaces conv(k×1) → conv(1×k) (any order, any rank) with one conv where exact."""

    name = "perpendicular_convs"
    summary = "k×1 conv then 1×k conv (kernels on different axes) → one k×k conv (RepNeXt)"
    pattern = "conv2(conv1(x)), each axis pointwise in conv1 or in conv2"
    refuses_when = (
        "both convs act on one axis (that is sequential_convs)",
        "the second conv zero-pads after a first conv with a bias",
        "the merged conv would cost more multiply-adds and no parallel conv absorbs it "
        "(allow_slower=True to force)",
        "the first conv's output is used elsewhere",
    )

    def match(self, node: Node, ctx: RuleContext) -> tuple[Node, Node] | None:
        if node.op != "call_module" or not is_plain_conv(ctx.module(node.target)):
            return None
        first = node.args[0]
        if not (
            len(node.args) == 1
            and isinstance(first, Node)
            and first.op == "call_module"
            and is_plain_conv(ctx.module(first.target))
        ):
            return None
        a = spec_from_conv(ctx.module(first.target))
        b = spec_from_conv(ctx.module(node.target))
        if a.dims != b.dims:
            return None

        def acts(s: ConvSpec) -> set[int]:
            return {d for d in range(s.dims) if s.kernel_size[d] > 1 or s.is_padded[d]}

        if not acts(a) or not acts(b) or acts(a) & acts(b):
            return None
        return first, node

    def check(self, m: tuple[Node, Node], ctx: RuleContext) -> _Plan | Refusal:
        first, second = m
        if not single_user(first):
            return Refusal(f"output of '{ctx.qualified(first.target)}' is used elsewhere")
        a = spec_from_conv(ctx.module(first.target))
        b = spec_from_conv(ctx.module(second.target))
        try:
            stride, padding, dilation, mode = perpendicular_geometry(
                a.kernel_size, a.stride, a.padding, a.dilation, a.padding_mode,
                b.kernel_size, b.stride, b.padding, b.dilation, b.padding_mode,
                a.bias is None or not bool((a.bias != 0).any()),
            )
            weight, bias, groups = compose_perpendicular(
                a.weight, a.bias, a.groups, b.weight, b.bias, b.groups
            )
        except ValueError as err:
            return Refusal(str(err))
        merged = ConvSpec(weight, bias, stride, padding, dilation, groups, mode)
        pair = [(a, ctx.call_shapes(first)), (b, ctx.call_shapes(second))]
        before, after, exact = cost.compare(pair, [(merged, ctx.call_shapes(second))])
        if after <= before or ctx.allow_slower:
            try:
                module = conv_from_spec(merged)
            except ValueError as err:
                return Refusal(str(err))
            return _Plan(first, second, module, before, after, detail="composed k×1 → 1×k")
        absorbed = _absorb(merged, first, second, ctx, pair)
        if isinstance(absorbed, _Plan):
            return absorbed
        where = "on the example input" if exact else "per output position (shapes unknown)"
        return Refusal(
            f"one {'×'.join(map(str, merged.kernel_size))} conv costs more multiply-adds than "
            f"the pair ({after:,} vs {before:,} {where}): slower; {absorbed} "
            "(allow_slower=True to force)"
        )

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        site = ctx.site_name(plan.second)
        old = [ctx.module(plan.first.target).weight, ctx.module(plan.second.target).weight]
        if plan.partner is None:
            target, node = plan.second, plan.second
        else:
            target, node = plan.partner, plan.partner
            old.append(ctx.module(plan.partner.target).weight)
        if ctx.exclusive_reason(target) is None:
            path = target.target
        else:
            path = ctx.fresh_path(ctx.owner_path(target), "reparam_conv")
        ctx.set_module(path, plan.module)
        node.target = path
        if plan.partner is None:
            plan.second.args = (plan.first.args[0],)
            ctx.erase_unused([plan.first])
        else:
            add = plan.add
            other = add.args[1] if add.args[0] is plan.second else add.args[0]
            add.replace_all_uses_with(other)
            ctx.erase_unused([add])
        return Rewrite(
            self.name, site, plan.detail, plan.before, plan.after, absmax(*old),
            absmax(plan.module.weight),
        )


def _absorb(
    merged: ConvSpec,
    first: Node,
    second: Node,
    ctx: RuleContext,
    pair: list[tuple[ConvSpec, tuple[int, ...] | None]],
) -> _Plan | str:
    """Add the merged kernel into a conv summed beside the pair, on the same input."""
    users = value_users(second)
    add = users[0] if len(users) == 1 else None
    if add is None or not is_add(add) or not all(isinstance(a, Node) for a in add.args):
        return "the pair's output is not a summand"
    x = first.args[0]
    for partner in _summands(add):
        if partner is second or not (
            partner.op == "call_module"
            and is_plain_conv(ctx.module(partner.target))
            and partner.args == (x,)
            and single_user(partner)
        ):
            continue
        p = spec_from_conv(ctx.module(partner.target))
        reason = _fits(merged, p)
        if reason:
            continue
        groups = math.gcd(p.groups, merged.groups)
        dense = dilate_kernel(merged.weight, merged.dilation)
        offset = [pl - ml for (pl, _), (ml, _) in zip(p.padding, merged.padding, strict=True)]
        weight = regroup_kernel(p.weight, p.groups, groups).double() + pad_kernel(
            regroup_kernel(dense, merged.groups, groups), p.kernel_size, offset
        ).double()
        bias = merged.bias.double() + (0 if p.bias is None else p.bias.double())
        spec = ConvSpec(
            weight.to(p.weight.dtype), bias.to(p.weight.dtype), p.stride, p.padding,
            p.dilation, groups, p.padding_mode,
        )
        before, after, _ = cost.compare(
            [*pair, (p, ctx.call_shapes(partner))], [(spec, ctx.call_shapes(partner))]
        )
        if after > before:
            continue
        return _Plan(
            first, second, conv_from_spec(spec), before, after, partner, add,
            f"composed k×1 → 1×k and added into the parallel conv "
            f"'{ctx.qualified(partner.target)}'",
        )
    return "no conv summed beside it on the same input holds the merged kernel"


def _summands(add: Node) -> list[Node]:
    """The nodes summed with ``add``'s operands, up the chain of single-use adds."""
    root = add
    while len(value_users(root)) == 1 and is_add(value_users(root)[0]):
        root = value_users(root)[0]
    terms, pending = [], [root]
    while pending:
        n = pending.pop()
        for arg in n.args:
            if isinstance(arg, Node):
                if is_add(arg) and single_user(arg):
                    pending.append(arg)
                else:
                    terms.append(arg)
    return terms


def _fits(merged: ConvSpec, p: ConvSpec) -> str:
    if any(d != 1 for d in p.dilation):
        return "the parallel conv is dilated"
    if p.stride != merged.stride or p.size_signature() != merged.size_signature():
        return "other stride or output grid"
    if p.out_channels != merged.out_channels or p.in_channels != merged.in_channels:
        return "other channels"
    ext = [d * (k - 1) + 1 for d, k in zip(merged.dilation, merged.kernel_size, strict=True)]
    for (pl, _), (ml, _), k, e in zip(p.padding, merged.padding, p.kernel_size, ext, strict=True):
        off = pl - ml
        if off < 0 or off + e > k:
            return "the merged kernel does not fit in the parallel conv's frame"
    if any(merged.is_padded) and merged.padding_mode != p.padding_mode:
        return "other padding mode"  # an unpadded merged kernel reads the same pixels
    return ""

r"""Merge a conv followed by a conv whose kernel acts on the other axes (``k×1`` then
``1×k``, RepNeXt's depthwise ``1×k → k×1``, arXiv:2406.16004) into one ``k×k`` conv.

With the kernels on different axes their full correlation is their outer product:

.. math:: K[o, i, u, v] = \sum_m W_2[o, m, 0, v]\, W_1[m, i, u, 0],\qquad
          b = b_2 + \textstyle\sum W_2 b_1

in ``gcd(g_1, g_2)`` groups (DBB transform III, arXiv:2103.13425). The geometry and the
exactness conditions (strides, dilations, paddings on different axes, the first conv's bias
at the second's zero-padded border) are in :mod:`reparam.transforms.perpendicular`.

Cost: one ``k_h×k_w`` conv costs ``k_h k_w`` taps per channel pair where the pair costs
``k_h + k_w`` (depthwise ``7×7``: 49 vs 14): merging alone is *more* multiply-adds, so it is
declined (``allow_slower=True`` forces it), like RepNeXt's own conversion, which keeps its
``1×11 → 11×1`` branch as two convs. When the pair is a summand next to a conv on the same
input whose kernel frame holds the merged kernel (RepNeXt's ``RepDWConvM``: a ``7×7`` beside
``1×7 → 7×1`` and ``1×5 → 5×1``), the merged kernel is added into that conv in the same step
(RepVGG-style, arXiv:2101.03697): the pair's MACs disappear.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.fx import Node

from reparam import cost
from reparam.convspec import ConvSpec, conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.views import is_add, single_user, value_users
from reparam.matcher import note_visits
from reparam.patterns import CONV, AllOf, Bindings, Given, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms.align import add_into_frame
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


def _acts(s: ConvSpec) -> set[int]:
    """The spatial axes a conv is not pointwise on (kernel > 1, or padded)."""
    return {d for d in range(s.dims) if s.kernel_size[d] > 1 or s.is_padded[d]}


def _perpendicular(second: Node, b: Bindings, view: object) -> tuple[ConvSpec, ConvSpec] | None:
    """The two convs' specs when they act on different axes (each on at least one), the
    second called on the first's output alone; else None."""
    if len(second.args) != 1:
        return None
    a, c = spec_from_conv(b.module("first")), spec_from_conv(b.module("second"))
    if a.dims != c.dims or not _acts(a) or not _acts(c) or _acts(a) & _acts(c):
        return None
    return a, c


class MergePerpendicularConvs(PatternRule):
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
    # conv2(conv1(x)), the kernels on different axes (a pair on one axis is sequential_convs:
    # no near-miss here)
    graph_pattern = AllOf(
        Module(is_plain_conv, CONV.bind("first"), label="conv").bind("second"),
        Given(_perpendicular, "convs acting on different axes", quiet=True).bind("specs"),
    )

    def check(self, m: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        first, second = m["first"], m["second"]
        if not single_user(first):
            return Refusal(f"output of '{ctx.qualified(first.target)}' is used elsewhere")
        a, b = m["specs"]
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
        target = plan.second if plan.partner is None else plan.partner
        if plan.partner is not None:
            old.append(ctx.module(plan.partner.target).weight)
        exclusive = ctx.exclusive_reason(target) is None
        ctx.tx.substitute(
            target, plan.module, stem="reparam_conv", exclusive=exclusive,
            near=ctx.owner_path(target),
        )
        if plan.partner is None:  # the merged conv reads the pair's input
            ctx.tx.set_input(plan.second, 0, plan.first.args[0])
            ctx.tx.erase_unused([plan.first])
        else:  # the partner computes the pair too: the add drops the pair's term
            add = plan.add
            other = add.args[1] if add.args[0] is plan.second else add.args[0]
            ctx.tx.redirect(add, other)
            ctx.tx.erase_unused([add])
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
    summands = _summands(add)
    # the walk reaches past the pattern's nodes (the sum's other adds and terms): the
    # driver's memo of this try must depend on them too
    note_visits([*summands.adds, *summands.terms])
    for partner in summands.terms:
        if partner is second or not (
            partner.op == "call_module"
            and is_plain_conv(ctx.module(partner.target))
            and partner.args == (x,)
            and single_user(partner)
        ):
            continue
        p = spec_from_conv(ctx.module(partner.target))
        spec = add_into_frame(p, merged)
        if isinstance(spec, Refusal):
            continue
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


@dataclass
class _Summands:
    adds: list[Node]  # the adds walked, up the chain and down the sum
    terms: list[Node]


def _summands(add: Node) -> _Summands:
    """The nodes summed with ``add``'s operands, up the chain of single-use adds."""
    root, adds = add, [add]
    while len(value_users(root)) == 1 and is_add(value_users(root)[0]):
        root = value_users(root)[0]
        adds.append(root)
    terms, pending = [], [root]
    while pending:
        n = pending.pop()
        for arg in n.args:
            if isinstance(arg, Node):
                if is_add(arg) and single_user(arg):
                    pending.append(arg)
                    adds.append(arg)
                else:
                    terms.append(arg)
    return _Summands(adds, terms)

r"""Move a "pad with the conv's bias" after a 1×1 conv in front of it, as zero padding.

A 1×1 conv (stride 1, no padding) maps a zero pixel to its bias ``b``, so padding its output
with ``b`` per channel is the same as zero-padding its input:

.. math:: \operatorname{pad}_{b}(W x + b) = W \operatorname{pad}_{0}(x) + b

DBB (arXiv:2103.13425) writes this "BN-and-pad" as ``pad(y - c) + c`` with ``c = BN(0)``
so that its 1×1 → k×k branch stays exact; once the BN is folded into the 1×1 conv, ``c``
is the conv's bias. Moving the pad in front lets the two convs compose
(``sequential_convs``) and the zero pad fold into the result (``pad_into_conv``).
Exact when ``c`` equals the bias (to the dtype's rounding) and the pad is a constant-zero pad.
Only done when an unpadded conv follows that the 1×1 will compose with at no extra cost:
alone, the moved pad would make the 1×1 conv also compute the border.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from reparam import cost
from reparam.convspec import is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.bias_pad import BIAS_PAD, BiasPad, bias_pad_of, fill_reason, zero_pad_args
from reparam.graph.views import single_user, value_users
from reparam.patterns import Bindings
from reparam.rules.base import PatternRule, Rewrite, RuleContext


class PadThroughPointwise(PatternRule):
    """Replaces pad(conv1x1(x) - b) + b with conv1x1(pad(x))."""

    name = "pad_through_pointwise"
    summary = "DBB's BN-and-pad after a 1×1 conv → zero padding before it"
    pattern = "pad(conv1x1(x) - c) + c, c = bias of the conv"
    refuses_when = (
        "the conv is not 1×1 with stride 1 and no padding",
        "the fill value is not the conv's bias",
        "an intermediate tensor is used elsewhere",
        "no unpadded conv follows to compose with (the 1×1 would compute the border for nothing)",
    )

    graph_pattern = BIAS_PAD

    def check(self, b: Bindings, ctx: RuleContext) -> BiasPad | Refusal:
        m = bias_pad_of(b)
        spec = spec_from_conv(ctx.module(m.conv.target))
        if (
            any(k != 1 for k in spec.kernel_size)
            or any(s != 1 for s in spec.stride)
            or any(spec.is_padded)
        ):
            return Refusal("the conv before the pad is not a 1×1, stride-1, unpadded conv")
        if not (single_user(m.conv) and single_user(m.sub) and single_user(m.pad)):
            return Refusal("an intermediate tensor is used elsewhere")
        if len(zero_pad_args(m.pad)) > 2 * spec.dims:
            return Refusal("the pad reaches the channel or batch dim")
        users = value_users(m.add)
        nxt = users[0] if len(users) == 1 else None
        if not (
            nxt is not None
            and nxt.op == "call_module"
            and is_plain_conv(ctx.module(nxt.target))
            and nxt.args[0] is m.add
        ):
            return Refusal(
                "no conv follows to compose with: moving the pad would make the "
                "1×1 conv run on the border for nothing"
            )
        after = spec_from_conv(ctx.module(nxt.target))
        if any(after.is_padded) or any(d != 1 for d in after.dilation):
            return Refusal("the conv after the pad pads or dilates: the two would not compose")
        # the move pays off only once sequential_convs composes the pair: decide on that
        groups = math.gcd(spec.groups, after.groups)
        merged = (after.out_channels, spec.in_channels // groups, *after.kernel_size)
        mid, out = ctx.call_shapes(m.conv), ctx.call_shapes(nxt)
        if mid is not None and out is not None:
            before = cost.conv_macs(spec.weight.shape, mid)
            before += cost.conv_macs(after.weight.shape, out)
            composed, exact = cost.conv_macs(merged, out), True
        else:
            before = cost.per_output(spec) + cost.per_output(after)
            composed, exact = math.prod(merged), False
        if composed > before and not ctx.allow_slower:
            return Refusal(
                cost.slower_reason(before, composed, exact, "the 1×1 composed with the next conv")
            )
        reason = fill_reason(m, spec, ctx)
        return Refusal(reason) if reason else m

    def rewrite(self, m: BiasPad, ctx: RuleContext) -> Rewrite:
        site = ctx.site_name(m.add)
        source = m.conv.args[0]
        with ctx.graph.inserting_before(m.conv):
            padded = ctx.graph.call_function(F.pad, (source, list(zero_pad_args(m.pad))))
        m.conv.args = (padded, *m.conv.args[1:])
        # the 1×1 now also computes the border (until sequential_convs composes it away)
        mids = ctx.call_shapes(m.conv)
        before = after = 0
        if mids is not None:
            weight = ctx.module(m.conv.target).weight.shape
            pads = zero_pad_args(m.pad)
            padded_shapes = []
            for mid in mids:
                padded = list(mid)
                for i in range(len(pads) // 2):  # F.pad lists the last dim first
                    padded[-1 - i] += pads[2 * i] + pads[2 * i + 1]
                padded_shapes.append(tuple(padded))
            before = cost.conv_macs(weight, mids)
            after = cost.conv_macs(weight, cost.AtShapes(padded_shapes))
            # what the next rule's cost check must see, at every call's shapes
            for key, padded in zip(ctx.shape_keys(), padded_shapes, strict=True):
                m.conv.meta[key] = padded
        m.add.replace_all_uses_with(m.conv)
        ctx.erase_unused([m.add])
        return Rewrite(
            self.name, site, "pad with the 1×1 conv's bias moved before it as zeros", before, after
        )

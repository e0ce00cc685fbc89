r"""A zero pad whose border is then overwritten with one value per channel is a pad with that
value, written as the sum the other pad rules read.

.. math:: \operatorname{fill}_{c}(\operatorname{pad}_0(y)) = \operatorname{pad}_0(y - c) + c

The left side is how DBB's official code writes its BN-and-pad layer (arXiv:2103.13425): pad
the norm's output with zeros, then assign ``c = BN(0)`` to the top, bottom, left and right
strips by slice assignment. The capture records each assignment as an out-of-place
:func:`~reparam.graph.inplace.setitem_out_of_place`; this rule recognises the four strips that
cover exactly the padded border and rewrites them to the right side, which
``pad_through_pointwise`` and ``pad_into_conv`` then merge into the neighbouring convs.
Exact when the strips are exactly the border (any order), the pad is a constant zero pad
of the last two dims, and ``c`` is a constant with one value per channel.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.fx import Node

from reparam.errors import Refusal
from reparam.graph.bias_pad import zero_pad_args
from reparam.graph.inplace import setitem_out_of_place
from reparam.graph.views import single_user
from reparam.patterns import Bindings, Call, Through, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext


@dataclass
class _Plan:
    last: Node
    pad: Node
    fills: list[Node]  # in program order
    value: Node | float


def _last_fill(node: Node) -> bool:
    """the last of a chain of slice assignments"""
    users = node.users
    return not (len(users) == 1 and next(iter(users)).target is setitem_out_of_place)


def _strip(index: object, height: int, width: int, pads: tuple[int, ...]) -> str | None:
    """Which border strip ``x[index]`` of a (N, C, height, width) tensor is, if any."""
    if not isinstance(index, tuple):
        index = (index,)
    index = tuple(index) + (slice(None),) * (4 - len(index))
    if len(index) != 4 or not all(isinstance(i, slice) for i in index):
        return None
    if index[0] != slice(None) or index[1] != slice(None):
        return None
    left, right, top, bottom = pads
    rows = index[2].indices(height)
    cols = index[3].indices(width)
    full_rows, full_cols = (0, height, 1), (0, width, 1)
    if cols == full_cols and rows == (0, top, 1) and top > 0:
        return "top"
    if cols == full_cols and rows == (height - bottom, height, 1) and bottom > 0:
        return "bottom"
    if rows == full_rows and cols == (0, left, 1) and left > 0:
        return "left"
    if rows == full_rows and cols == (width - right, width, 1) and right > 0:
        return "right"
    return None


class BorderFillAsPad(PatternRule):
    """Replaces a zero pad whose border strips are assigned ``c`` with pad(y - c) + c."""

    name = "border_fill_as_pad"
    summary = "DBB's slice-assigned BN-and-pad border → the pad(y - c) + c form"
    pattern = "x = pad(y); x[top] = c; x[bottom] = c; x[left] = c; x[right] = c"
    refuses_when = (
        "the assigned strips are not exactly the padded border",
        "the strips get different values, or a value that depends on the input",
        "an intermediate tensor is used elsewhere",
    )
    # the last assignment of a chain of them, back to the zero pad they overwrite
    graph_pattern = Call(
        setitem_out_of_place,
        Through(
            Call(setitem_out_of_place),
            Where(lambda n, _: zero_pad_args(n) is not None, "a zero pad").bind("pad"),
            exclusive=False,
        ).bind("fills"),
        where=_last_fill,
    ).bind("last")

    def check(self, b: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        fills = [b["last"], *b["fills"]][::-1]
        m = _Plan(b["last"], b["pad"], fills, fills[-1].args[2])
        pads = tuple(zero_pad_args(m.pad))
        if len(pads) != 4:
            return Refusal("the pad is not a pad of the last two dims")
        shape = ctx.shape(m.pad)
        if shape is None or len(shape) != 4:
            return Refusal("the padded tensor's shape is unknown (give example inputs)")
        if not all(single_user(n) for n in [m.pad, *m.fills[:-1]]):
            return Refusal("an intermediate tensor is used elsewhere")
        strips = [_strip(f.args[1], shape[2], shape[3], pads) for f in m.fills]
        wanted = {s for s, p in zip(("left", "right", "top", "bottom"), pads, strict=True) if p}
        if None in strips or set(strips) != wanted or len(strips) != len(wanted):
            return Refusal("the assigned strips are not exactly the padded border")
        values = [ctx.constant_value(f.args[2]) for f in m.fills]
        if any(v is None for v in values):
            return Refusal("a border value depends on the input")
        first = values[0]
        if any(v.shape != first.shape or not torch.equal(v, first) for v in values[1:]):
            return Refusal("the strips get different values")
        if first.numel() not in (1, shape[1]) or first.numel() != first.reshape(-1).shape[0]:
            return Refusal("the border value is not one value per channel")
        try:
            torch.broadcast_to(first, (1, shape[1], 1, 1))
        except RuntimeError:
            return Refusal("the border value is not one value per channel")
        return m

    def rewrite(self, m: _Plan, ctx: RuleContext) -> Rewrite:
        site, tx = ctx.site_name(m.last), ctx.tx
        shifted = tx.insert_function(operator.sub, (m.pad.args[0], m.value), m.last)
        padded = tx.insert_function(F.pad, (shifted, list(zero_pad_args(m.pad))), m.last)
        tx.redirect(m.last, tx.insert_function(operator.add, (padded, m.value), m.last))
        tx.erase_unused([m.last])
        return Rewrite(self.name, site, "slice-assigned border read as pad(y - c) + c")

r"""DBB's "pad with the conv's bias" in a graph: ``pad(conv(x) - c) + c`` (arXiv:2103.13425).

A 1×1 conv maps a zero pixel to its bias ``b``, so padding its output with ``c = b`` per
channel equals zero-padding its input: :math:`\operatorname{pad}_{b}(W x + b) =
W \operatorname{pad}_{0}(x) + b`. Shared by the rules that read this form (pads moved through
1×1 convs, parallel branches); the rules decide what to do with a match. :data:`BIAS_PAD` (or
:func:`bias_padded` around a conv pattern of one's own) finds the form, :func:`fill_reason`
says whether ``c`` is the bias, :func:`input_pad` gives the zero pad of the conv's input that
the form amounts to.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.fx import Node

from reparam.convspec import ConvSpec
from reparam.matcher import Bindings, note_visits
from reparam.patterns import CONV, Any_, AnyOf, Call, Pattern
from reparam.verify import tolerance_for

if TYPE_CHECKING:
    from reparam.rules.base import RuleContext

__all__ = [
    "BIAS_PAD",
    "BiasPad",
    "bias_pad_of",
    "bias_padded",
    "fill_reason",
    "input_pad",
    "zero_pad_args",
]

_ADDS = {operator.add, torch.add}
_SUBS = {operator.sub, torch.sub}


def zero_pad_args(node: Node) -> list[int] | None:
    """The pad list of ``F.pad(x, pads)`` in constant mode with value 0, else None."""
    if node.op != "call_function" or node.target is not F.pad:
        return None
    pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        return None
    if not isinstance(pads, (list, tuple)) or not all(isinstance(p, int) for p in pads):
        return None
    return list(pads)


@dataclass
class BiasPad:
    """The nodes of ``pad(conv(x) - c) + c`` (``add`` the root, ``fill`` the ``c`` added)."""

    add: Node
    pad: Node
    sub: Node
    conv: Node
    fill: Node


def _zero_pad(node: Node) -> bool:
    """a constant-zero F.pad"""
    return zero_pad_args(node) is not None


def _plain(node: Node) -> bool:
    """a plain two-operand add / subtract (no ``alpha``)"""
    return len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1


def bias_padded(conv: Pattern) -> Pattern:
    """``pad(conv(x) - c) + c`` (either operand order), anchored at the add, ``conv`` matching
    the conv (bind it; :func:`bias_pad_of` reads it by that name); binds ``add``, ``pad``,
    ``sub``, ``fill`` (the ``c`` added) and ``fill2`` (the ``c`` subtracted), unchecked."""
    pad = Call(
        F.pad,
        Call(tuple(_SUBS), conv, Any_().bind("fill2"), where=_plain).bind("sub"),
        where=_zero_pad,
    ).bind("pad")
    return AnyOf(
        Call(tuple(_ADDS), pad, Any_().bind("fill"), where=_plain),
        Call(tuple(_ADDS), Any_().bind("fill"), pad, where=_plain),
    ).bind("add")


BIAS_PAD = bias_padded(CONV.bind("conv"))
"""``pad(conv(x) - c) + c`` (either operand order), anchored at the add; ``c`` unchecked."""


def bias_pad_of(m: Bindings, conv: str = "conv") -> BiasPad:
    """The :class:`BiasPad` of a :data:`BIAS_PAD` (or :func:`bias_padded`) match, its conv
    bound as ``conv``."""
    return BiasPad(m["add"], m["pad"], m["sub"], m[conv], m["fill"])


def input_pad(m: BiasPad, spec: ConvSpec, ctx: RuleContext) -> tuple[tuple[int, int], ...] | None:
    """The zero pad of the conv's *input*, per spatial dim ``(left, right)``, that the form
    ``m`` after the conv ``spec`` amounts to; None unless the conv is 1×1 and unpadded, the pad
    is non-negative, in pairs, on spatial dims only, and the fill is the conv's bias
    (:func:`fill_reason`). Moving the pad in front is exact for a stride-1 conv; a strided one
    is the caller's to refuse (:func:`reparam.convspec_chain.compose_specs` does)."""
    pads = zero_pad_args(m.pad)
    if (
        pads is None
        or any(k != 1 for k in spec.kernel_size)
        or any(spec.is_padded)
        or len(pads) > 2 * spec.dims
        or len(pads) % 2
        or any(p < 0 for p in pads)
        or fill_reason(m, spec, ctx)
    ):
        return None
    extra = [(0, 0)] * spec.dims
    for i in range(len(pads) // 2):  # F.pad lists the last dim first
        extra[spec.dims - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    return tuple(extra)


def fill_reason(m: BiasPad, spec: ConvSpec, ctx: RuleContext) -> str | None:
    """Why the fill ``c`` is not the conv's bias per channel (None when it is)."""
    # the fills are evaluated from the nodes they are computed from, beyond the pattern's:
    # the driver's memo of a try that read them depends on those too
    note_visits(_computed_from([m.fill, m.sub.args[1]]))
    fill, fill2 = ctx.constant_value(m.fill), ctx.constant_value(m.sub.args[1])
    if fill is None or fill2 is None:
        return "the fill value depends on the input"
    bias = spec.bias if spec.bias is not None else torch.zeros(spec.out_channels)
    shape = (1, spec.out_channels) + (1,) * spec.dims
    try:
        fill, fill2 = fill.expand(shape), fill2.expand(shape)
    except RuntimeError:
        return "the fill value is not one value per channel"
    b = bias.reshape(shape).to(fill)
    tol = tolerance_for(spec.weight.dtype) * max(1.0, float(b.abs().max()))
    if float((fill - b).abs().max()) > tol or float((fill2 - b).abs().max()) > tol:
        return "the fill value differs from the conv's bias: the border would differ"
    return None


def _computed_from(values: list[object]) -> set[Node]:
    """The nodes :meth:`~reparam.graph.scope.ScopeView.constant_value` reads to evaluate
    ``values``: each node and, through function and method calls, the nodes it is computed
    from."""
    seen: set[Node] = set()
    pending = [v for v in values if isinstance(v, Node)]
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op in ("call_function", "call_method"):
            pending.extend(node.all_input_nodes)
    return seen

r"""Merge a scalar-weighted sum of linear layers of one input into one linear layer.

.. math:: \sum_t c_t\,(W_t x + b_t) = \Big(\sum_t c_t W_t\Big) x + \sum_t c_t b_t

RepViT (arXiv:2307.09283) and LeViT (arXiv:2104.01136) train a classifier and a distillation
head on the same features and average them at inference, ``(head(x) + head_dist(x)) / 2``;
their own conversion fuses the two heads into one Linear. Seen in any style: ``a + b`` /
``sum([...])`` / ``+=`` with an outer ``/ n`` or ``* c``, per-term ``c * head(x)``,
``torch.stack([...]).mean(0)`` / ``.sum(0)``. BN → Linear heads reach this form once
``norm_linear`` has folded their norms.

Exact always (linearity); terms that are not scaled linears of the shared input stay as
they are and are added to the merged layer. Coefficients must be Python numbers.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.graph.anchors import function_keys
from reparam.graph.scope import ScopeView
from reparam.graph.views import single_user, value_users
from reparam.patterns import AllOf, AnyOf, Bindings, Given, Module, Sum, Through, Where, match
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms import merge_linears

_MULS = {operator.mul, torch.mul, operator.imul}
_DIVS = {operator.truediv, torch.div, operator.itruediv}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_step(node: Node) -> tuple[Node, float] | None:
    """``node = inner * c`` / ``c * inner`` / ``inner / c`` / ``-inner``: (inner, factor)."""
    if (
        node.op == "call_function"
        and node.target is operator.neg
        and isinstance(node.args[0], Node)
    ):
        return node.args[0], -1.0
    is_mul = (node.op == "call_function" and node.target in _MULS) or (
        node.op == "call_method" and node.target == "mul"
    )
    is_div = (node.op == "call_function" and node.target in _DIVS) or (
        node.op == "call_method" and node.target == "div"
    )
    if not (is_mul or is_div) or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    if isinstance(a, Node) and _number(b):
        if is_div:
            return (a, 1.0 / b) if b != 0 else None
        return a, float(b)
    if is_mul and isinstance(b, Node) and _number(a):
        return b, float(a)
    return None


def _stack_mean_terms(node: Node) -> tuple[list[Node], float] | None:
    """``torch.stack(xs, 0).mean(0)`` / ``.sum(0)``: (xs, factor)."""
    if node.op == "call_method" and node.target in ("mean", "sum"):
        args = node.args[1:]
        dim = node.kwargs.get("dim", args[0] if args else None)
        name = node.target
        source = node.args[0]
    elif node.op == "call_function" and node.target in (torch.mean, torch.sum):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        name = node.target.__name__
        source = node.args[0]
    else:
        return None
    if dim not in (0, (0,), [0]) or node.kwargs.get("keepdim", False):
        return None
    if not (
        isinstance(source, Node)
        and source.op == "call_function"
        and source.target is torch.stack
        and single_user(source)
    ):
        return None
    parts = source.args[0] if source.args else source.kwargs.get("tensors")
    sdim = source.kwargs.get("dim", source.args[1] if len(source.args) > 1 else 0)
    if sdim != 0 or not isinstance(parts, (list, tuple)) or len(parts) < 2:
        return None
    if not all(isinstance(p, Node) for p in parts):
        return None
    return list(parts), (1.0 / len(parts) if name == "mean" else 1.0)


def _scaled(node: Node, view: ScopeView) -> bool:
    return _scalar_step(node) is not None


def _unscaled(node: Node, view: ScopeView) -> Node:
    step = _scalar_step(node)
    assert step is not None
    return step[0]


def _outermost(node: Node, view: ScopeView) -> bool:
    """the outermost scalar factor (its reader does not scale it again)"""
    users = value_users(node)
    return not (len(users) == 1 and _scalar_step(users[0]) is not None)


def _is_stack_mean(node: Node, view: ScopeView) -> bool:
    return _stack_mean_terms(node) is not None


def _factor(nodes: tuple[Node, ...]) -> float:
    factor = 1.0
    for node in nodes:
        step = _scalar_step(node)
        assert step is not None
        factor *= step[1]
    return factor


#: zero or more scalar factors; every node below the first is read once
_FACTORS = Where(
    _scaled,
    "a scalar factor (x * c, x / c, -x)",
    keys=function_keys([operator.neg, *_MULS, *_DIVS], methods=["mul", "div"]),
)
_SCALED_LINEAR = Through(
    _FACTORS,
    Module(nn.Linear, Where(lambda n, v: True, "a tensor").bind("x")).bind("linear"),
    exclusive="below",
    step=_unscaled,
).bind("factors")


@dataclass
class _Term:
    node: Node  # the summand
    linear: Node | None  # the linear call it scales, if any
    coef: float  # the linear's coefficient in the total
    outer: float  # the factor applied to ``node`` itself


@dataclass
class _Match:
    top: Node  # the node whose value the merged expression replaces
    source: Node
    terms: list[_Term]
    others: list[tuple[Node, float]]


def _shared_input(top: Node, b: Bindings, ctx: ScopeView) -> _Match | None:
    """The largest group (two or more) of scaled linears of one input among the summands."""
    factor, summands = _factor(b["factors"]), b["summands"]
    stacked = _stack_mean_terms(summands)
    if stacked is not None:
        parts, f = stacked
        pairs = [(p, factor * f) for p in parts]
    else:
        pairs = [(t, factor) for t in b["sum"].terms]
    terms: list[_Term] = []
    for summand, coef in pairs:
        linear = match(_SCALED_LINEAR, summand, ctx)
        if linear:
            terms.append(_Term(summand, linear["linear"], coef * _factor(linear["factors"]), coef))
        else:
            terms.append(_Term(summand, None, coef, coef))
    groups: dict[Node, list[_Term]] = {}
    for t in terms:
        if t.linear is not None:
            groups.setdefault(t.linear.args[0], []).append(t)
    if not groups:
        return None
    source, best = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(best) < 2:
        return None
    others = [(t.node, t.outer) for t in terms if t not in best]
    return _Match(top, source, best, others)


class MergeParallelLinears(PatternRule):
    """Replaces sum_t c_t * linear_t(x) with one linear."""

    name = "parallel_linears"
    summary = (
        "scalar-weighted sum of linears of one input ((head(x) + head_dist(x)) / 2, "
        "stack(...).mean(0)) → one linear"
    )
    pattern = "c * sum_t c_t * linear_t(x) | stack([linear_t(x)]).mean(0)"
    refuses_when = (
        "fewer than two linears read the same input",
        "the linears differ in feature counts",
        "a linear's output is used elsewhere",
    )
    graph_pattern = AllOf(
        Where(_outermost, "the outermost scalar factor"),
        Through(
            _FACTORS,
            AnyOf(
                Where(
                    _is_stack_mean,
                    "torch.stack([...], 0).mean(0) / .sum(0)",
                    keys=function_keys([torch.mean, torch.sum], methods=["mean", "sum"]),
                ),
                Sum(whole=True).bind("sum"),
            ).bind("summands"),
            exclusive="below",
            step=_unscaled,
        ).bind("factors"),
        Given(
            _shared_input,
            "two or more scaled linears of one input among its terms",
            reason="fewer than two of its terms are scaled linears of one input",
            quiet=True,
        ).bind("group"),
    )
    near_miss_depth = 4  # a scalar factor alone is no near-miss

    def check(self, b: Bindings, ctx: RuleContext) -> tuple[_Match, nn.Linear] | Refusal:
        m: _Match = b["group"]
        linears = [ctx.module(t.linear.target) for t in m.terms]
        if len({(lin.in_features, lin.out_features) for lin in linears}) != 1:
            return Refusal("the linears differ in feature counts")
        for t in m.terms:
            if not single_user(t.linear):
                return Refusal(f"output of '{ctx.qualified(t.linear.target)}' is used elsewhere")
        like = linears[0].weight
        if not like.dtype.is_floating_point:
            return Refusal("weights are not floating point")
        if len({(lin.weight.dtype, lin.weight.device) for lin in linears}) != 1:
            return Refusal("the linears differ in dtype or device")
        weight, bias = merge_linears(
            [lin.weight.detach() for lin in linears],
            [None if lin.bias is None else lin.bias.detach() for lin in linears],
            [t.coef for t in m.terms],
        )
        merged = nn.Linear(
            like.shape[1], like.shape[0], bias=True, device=like.device, dtype=like.dtype
        )
        with torch.no_grad():
            merged.weight.copy_(weight)
            merged.bias.copy_(bias)
        return m, merged

    def rewrite(self, plan: tuple[_Match, nn.Linear], ctx: RuleContext) -> Rewrite:
        m, module = plan
        tx = ctx.tx
        site = ctx.site_name(m.top)
        before = absmax(*(ctx.module(t.linear.target).weight for t in m.terms))
        # the path of a linear used only here (checkpoint keys stay), else a fresh one
        path = next(
            (str(t.linear.target) for t in m.terms if ctx.exclusive_reason(t.linear) is None),
            None,
        ) or tx.fresh_path(ctx.owner_path(m.top), "reparam_linear")
        tx.place(path, module)
        value = tx.insert_call(path, (m.source,), before=m.top)
        for other, coef in m.others:
            if coef != 1.0:
                other = tx.insert_function(operator.mul, (other, coef), before=m.top)
            value = tx.insert_function(operator.add, (value, other), before=m.top)
        tx.redirect(m.top, value)
        tx.erase_unused([m.top])
        detail = f"merged {len(m.terms)} linears (coefficients {[t.coef for t in m.terms]})"
        return Rewrite(self.name, site, detail, 0, 0, before, absmax(module.weight))

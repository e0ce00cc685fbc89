r"""Fold a per-channel affine into *every* conv / linear that reads it, through layout ops.

.. math:: W_k\, L_k(s \odot x + t) + b_k = (W_k \operatorname{diag} \tilde s_k)\, L_k(x)
          + (b_k + W_k \tilde t_k)\qquad\text{for each consumer } k

where ``L_k`` is the chain of layout ops (permute / reshape / transpose / flatten) between
the norm and consumer ``k`` and :math:`\tilde s_k, \tilde t_k` are ``s, t`` pushed through it
(:mod:`reparam.transforms.layout`). A batch norm shared by several heads (Inception-style
branches, a pre-norm in front of parallel q/k/v projections, ``BN → permute → Linear``) then
disappears. Exact when every reader of the normalized value is a conv / linear whose input
channels see a per-channel affine: a linear always (no padding), a conv when it does not
zero-pad, its padding mode copies values (reflect / replicate / circular), or the shift is
zero (DBB transform I, arXiv:2103.13425). If any reader is not linear in it (a
multiplicative gate, a residual add of the normalized value, a zero-padded conv with a
shift, the scope's output), the norm stays, with that reader named. Cost: each consumer keeps
its shape, so MACs are unchanged and the norm's pass over memory goes away.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.fx import Node

from reparam.convspec import conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.layout_ops import compose, is_layout, node_layout
from reparam.graph.scope import ScopeView
from reparam.graph.views import AffineView, value_users
from reparam.patterns import Affine, AllOf, Bindings, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.rules.chain import linear_with
from reparam.transforms import fold_affine_before
from reparam.transforms.layout import axis_vector, broadcast_on_axis

_GATES = {"mul", "matmul", "bmm", "div", "sigmoid"}


@dataclass
class _Consumer:
    node: Node  # the conv / linear call
    path: list[Node]  # layout ops from the norm to it


@dataclass
class _Match:
    affine: AffineView | Refusal
    consumers: list[_Consumer]
    blocked: list[str]  # readers that are not a conv / linear (described)


def _describe(user: Node, ctx: ScopeView) -> str:
    name = user.target if user.op == "call_method" else getattr(user.target, "__name__", "")
    if user.op == "output":
        return "the normalized value is an output of the scope"
    if name in ("add", "iadd", "sub", "__add__"):
        return f"'{user.name}' adds the normalized value to something (a residual)"
    if name in _GATES or "mul" in str(name):
        return f"'{user.name}' multiplies the normalized value (a gate: not linear in it)"
    if user.op == "call_module":
        kind = type(ctx.module(user.target)).__name__
        return f"module '{ctx.qualified(str(user.target))}' ({kind}) reads it"
    return f"'{user.name}' ({name or user.op}) reads the normalized value"


def _is_layer(node: Node, source: Node, ctx: ScopeView) -> bool:
    if node.op != "call_module" or node.args[:1] != (source,) or len(node.args) != 1:
        return False
    module = ctx.module(node.target)
    return is_plain_conv(module) or isinstance(module, nn.Linear)


def _readers(start: Node, ctx: ScopeView) -> tuple[list[_Consumer], list[str]]:
    consumers: list[_Consumer] = []
    blocked: list[str] = []
    pending: list[tuple[Node, list[Node]]] = [(start, [])]
    while pending:
        node, path = pending.pop()
        for user in value_users(node):
            if _is_layer(user, node, ctx):
                consumers.append(_Consumer(user, path))
            elif user.args[:1] == (node,) and is_layout(user, ctx):
                pending.append((user, [*path, user]))
            else:
                blocked.append(_describe(user, ctx))
    return consumers, blocked


def _worth_it(node: Node, ctx: ScopeView) -> bool:
    consumers, blocked = _readers(node, ctx)
    # one direct reader and nothing else: norm_conv / norm_linear
    return bool(consumers) and not (len(consumers) == 1 and not consumers[0].path and not blocked)


class FoldNormIntoConsumers(PatternRule):
    """Replaces a norm read by several convs / linears (or through layout ops) with nothing."""

    name = "norm_into_consumers"
    summary = "batch norm / channel scale read by several convs / linears, or through permutes"
    pattern = "layer_k(layout*(affine(x))) for every reader k of the affine"
    refuses_when = (
        "the norm uses batch statistics",
        "a reader is not a conv / linear (a gate, a residual add, the output)",
        "a reader is a conv that zero-pads and the affine has a shift",
        "through the layout ops the affine is not per-channel for a reader",
    )
    graph_pattern = AllOf(
        Affine().bind("affine"),
        Where(_worth_it, "read by several convs / linears, or one through layout ops"),
    ).bind("norm")

    def check(self, b: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        affine = b["affine"]
        if isinstance(affine, Refusal):
            return affine
        m = _Match(affine, *_readers(b["norm"], ctx))
        if m.blocked:
            return Refusal(
                f"the {affine.kind} is also read by something not linear in it: "
                + "; ".join(m.blocked)
            )
        shape = ctx.shape(affine.node)
        if shape is None or len(shape) < 2:
            return Refusal("the shape of the normalized value is unknown; pass example_inputs")
        if not affine.fits_rank(len(shape)) or affine.scale.numel() != shape[1]:
            return Refusal("the scale does not act on dim 1 of the normalized value")
        full_s = broadcast_on_axis(affine.scale, shape, 1)
        full_t = broadcast_on_axis(affine.shift, shape, 1)
        folded: list[tuple[Node, nn.Module]] = []
        for c in m.consumers:
            new = _fold(c, full_s, full_t, affine, ctx)
            if isinstance(new, Refusal):
                return new
            folded.append((c.node, new))
        return _Plan(m, folded)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        affine = plan.match.affine
        site = ctx.site_name(affine.node)
        before = absmax(*(ctx.module(n.target).weight for n, _ in plan.folded))
        tx = ctx.tx
        for node, module in plan.folded:
            exclusive, near = ctx.exclusive_reason(node) is None, ctx.owner_path(node)
            tx.substitute(node, module, stem="reparam_fused", exclusive=exclusive, near=near)
        if affine.node.op == "call_module" and ctx.exclusive_reason(affine.node) is None:
            tx.place(affine.node.target, nn.Identity())
        tx.redirect(affine.node, affine.input)
        tx.erase_unused([affine.node])
        n = len(plan.folded)
        return Rewrite(
            self.name,
            site,
            f"{affine.kind} folded into {n} reader(s); MACs unchanged, one norm pass less",
            weight_absmax_before=before,
            weight_absmax_after=absmax(*(m.weight for _, m in plan.folded)),
        )


@dataclass
class _Plan:
    match: _Match
    folded: list[tuple[Node, nn.Module]]


def _fold(
    c: _Consumer, full_s: Tensor, full_t: Tensor, affine: AffineView, ctx: RuleContext
) -> nn.Module | Refusal:
    layer = ctx.module(c.node.target)
    where = ctx.qualified(str(c.node.target))
    steps = [node_layout(n, ctx) for n in c.path]
    if any(step is None for step in steps):
        return Refusal(f"a layout op before '{where}' has an unknown effect")
    layout = compose(steps)
    try:
        s_in, t_in = layout(full_s), layout(full_t)
    except RuntimeError as err:
        return Refusal(f"cannot replay the layout ops before '{where}': {err}")
    if isinstance(layer, nn.Linear):
        scale, shift = axis_vector(s_in, -1), axis_vector(t_in, -1)
        if scale is None or shift is None or scale.numel() != layer.in_features:
            return Refusal(f"the {affine.kind} is not per input feature of linear '{where}'")
        weight, bias = fold_affine_before(
            layer.weight.detach(),
            None if layer.bias is None else layer.bias.detach(),
            scale.to(layer.weight),
            shift.to(layer.weight),
        )
        return linear_with(layer, weight, bias)
    spec = spec_from_conv(layer)
    if s_in.dim() != spec.dims + 2:
        return Refusal(f"conv '{where}' reads a tensor of another rank")
    scale, shift = axis_vector(s_in, 1), axis_vector(t_in, 1)
    if scale is None or shift is None or scale.numel() != spec.in_channels:
        return Refusal(f"the {affine.kind} is not per input channel of conv '{where}'")
    if any(spec.is_padded) and spec.padding_mode == "zeros" and bool((shift != 0).any()):
        return Refusal(
            f"conv '{where}' zero-pads its input and the {affine.kind} adds a shift: "
            "border outputs would differ"
        )
    weight, bias = fold_affine_before(
        spec.weight, spec.bias, scale.to(spec.weight), shift.to(spec.weight), spec.groups
    )
    return conv_from_spec(spec.with_weights(weight, bias))

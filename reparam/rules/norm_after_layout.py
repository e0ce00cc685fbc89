r"""Fold a per-channel affine that follows a conv / linear *through layout ops* into it.

.. math:: s \odot L(W x + b) + t = L\big((\tilde s W) x + \tilde s b + \tilde t\big)

where ``L`` is a chain of permutes / reshapes / flattens / transposes and
:math:`\tilde s, \tilde t` are ``s, t`` pulled back through ``L`` (see
:mod:`reparam.transforms.layout`). Exact when the pulled-back parameters are per output
channel of the layer (constant along every other axis): ``Linear -> permute(0, 3, 1, 2) ->
BatchNorm2d`` (UniRepLKNet's FFN, arXiv:2311.15599), ``Linear (N, L, C) -> transpose ->
BatchNorm1d``, ``conv -> flatten(2) -> BatchNorm1d(C)``, ``conv -> flatten -> BatchNorm1d(C h
w)`` on a ``1×1`` map. ``conv -> flatten -> BatchNorm1d(C h w)`` with parameters that vary
over positions is a per-position affine, not a conv: refused. The index map is computed on
the example shapes; permutes and flattens map the channel axis the same way for every input.
"""

from __future__ import annotations

from torch import nn
from torch.fx import Node

from reparam.convspec import conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.layout_ops import compose, is_layout, node_layout
from reparam.graph.scope import ScopeView
from reparam.graph.views import single_user
from reparam.patterns import Affine, Bindings, Module, Through, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold, linear_with
from reparam.transforms import fold_affine_after
from reparam.transforms.layout import axis_vector, broadcast_on_axis, pull_back


def _is_conv_or_linear(module: nn.Module) -> bool:
    return is_plain_conv(module) or isinstance(module, nn.Linear)


def is_layer(node: object, ctx: ScopeView) -> bool:
    """A call of a plain conv or an ``nn.Linear``."""
    if not isinstance(node, Node) or node.op != "call_module":
        return False
    return _is_conv_or_linear(ctx.module(node.target))


class FoldNormAfterLayout(PatternRule):
    """Replaces layer → layout ops → norm with layer' → layout ops."""

    name = "norm_after_layout"
    summary = "batch norm / channel scale after a conv or linear seen through permute / reshape"
    pattern = "affine(layout+(layer(x))), layout = permute | transpose | reshape | flatten"
    refuses_when = (
        "the norm uses batch statistics",
        "shapes are unknown (pass example_inputs)",
        "the layout moves the norm's channels onto something other than the layer's channels "
        "(e.g. a per-position affine after a flatten)",
        "an intermediate tensor is used elsewhere",
    )
    graph_pattern = Affine(
        Through(
            Where(lambda n, v: not is_layer(n, v) and is_layout(n, v), "a layout op"),
            Module(_is_conv_or_linear, label="conv or linear").bind("layer"),
            min_steps=1,
        ).bind("layouts")
    ).bind("affine")

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, layer_node, layer = m["affine"], m["layer"], m.module("layer")
        layouts = m["layouts"][::-1]  # from the layer's output to the affine's input
        if isinstance(affine, Refusal):
            return affine
        if not single_user(layer_node):
            return Refusal(f"output of '{ctx.qualified(layer_node.target)}' is used elsewhere")
        in_shape, out_shape = ctx.shape(layer_node), ctx.shape(affine.input)
        if in_shape is None or out_shape is None or len(out_shape) < 2:
            return Refusal("shapes around the layout ops are unknown; pass example_inputs")
        if not affine.fits_rank(len(out_shape)):
            return Refusal("the scale does not broadcast over dim 1")
        if affine.scale.numel() != out_shape[1]:
            return Refusal("the norm's channel count differs from dim 1 of its input")
        steps = [node_layout(n, ctx) for n in layouts]
        if any(step is None for step in steps):
            return Refusal("a layout op's effect is unknown (shapes or axes not constant)")
        layout = compose(steps)
        axis = -1 if isinstance(layer, nn.Linear) else 1
        try:
            scale = axis_vector(
                pull_back(broadcast_on_axis(affine.scale, out_shape, 1), layout, in_shape), axis
            )
            shift = axis_vector(
                pull_back(broadcast_on_axis(affine.shift, out_shape, 1), layout, in_shape), axis
            )
        except ValueError as err:
            return Refusal(str(err))
        if scale is None or shift is None:
            return Refusal(
                f"through the layout ops the {affine.kind} varies along an axis other than "
                f"the channels of '{ctx.qualified(layer_node.target)}' (a per-position "
                "affine, not a per-channel one)"
            )
        if isinstance(layer, nn.Linear):
            weight, bias = fold_affine_after(
                layer.weight.detach(),
                None if layer.bias is None else layer.bias.detach(),
                scale.to(layer.weight),
                shift.to(layer.weight),
            )
            new: nn.Module = linear_with(layer, weight, bias)
        else:
            spec = spec_from_conv(layer)
            weight, bias = fold_affine_after(
                spec.weight, spec.bias, scale.to(spec.weight), shift.to(spec.weight)
            )
            new = conv_from_spec(spec.with_weights(weight, bias))
        ops = " → ".join(n.name for n in layouts)
        return ChainPlan(layer_node, affine, new, f"{affine.kind} folded through {ops}")

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=False)

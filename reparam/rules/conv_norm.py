r"""Fold a per-channel affine (batch norm, ``x * gamma``) that follows a conv into the conv.

.. math:: s\,(W * x + b) + t = (s W) * x + (s b + t)

Exact for any stride, dilation, groups, padding and padding mode: the affine acts on the
conv's output channels, after all border handling. Source: RepVGG (arXiv:2101.03697, Sec.
3.3), DBB transform I (arXiv:2103.13425).
"""

from __future__ import annotations

from reparam.convspec import conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.views import single_user
from reparam.patterns import Affine, Bindings, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold
from reparam.transforms import fold_affine_after


class FoldNormAfterConv(PatternRule):
    """Replaces conv → norm with one conv."""

    name = "conv_norm"
    summary = "conv (1d/2d/3d, any geometry) followed by a batch norm or per-channel scale"
    pattern = "affine(conv(x))"
    refuses_when = (
        "the norm uses batch statistics (training mode, no running stats)",
        "the conv output is used by another node too",
        "the channel counts disagree",
    )
    graph_pattern = Affine(
        Module(is_plain_conv, label="conv", refuse_opaque=True).bind("conv")
    ).bind("affine")

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, conv_node, conv = m["affine"], m["conv"], m.module("conv")
        if isinstance(affine, Refusal):
            return affine
        if not single_user(conv_node):
            return Refusal(
                f"output of conv '{ctx.qualified(conv_node.target)}' is also used "
                "elsewhere; folding would change that use"
            )
        if affine.scale.numel() != conv.out_channels:
            return Refusal(
                f"norm has {affine.scale.numel()} channels, conv has {conv.out_channels}"
            )
        if not affine.fits_rank(conv.weight.dim()):
            return Refusal("the scale does not broadcast over the conv's channel dim")
        if not conv.weight.dtype.is_floating_point:
            return Refusal("conv weights are not floating point")
        spec = spec_from_conv(conv)
        scale, shift = affine.scale.to(spec.weight), affine.shift.to(spec.weight)
        weight, bias = fold_affine_after(spec.weight, spec.bias, scale, shift)
        new = conv_from_spec(spec.with_weights(weight, bias))
        return ChainPlan(conv_node, affine, new, f"{affine.kind} folded into conv")

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=False)

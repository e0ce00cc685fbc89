r"""Fold a per-channel affine that precedes a conv into the conv.

.. math:: W * (s \odot x + t) + b = (W \operatorname{diag} s) * x + (b + \textstyle\sum W t)

Exact when the conv reads no zero padding (``padding = 0``), when the shift ``t`` is zero
(a pure scale), or when the padding mode is ``reflect``/``replicate``/``circular`` (those pads
copy values, so they commute with the affine). With zero padding and ``t ≠ 0`` the border
outputs would see ``t`` where the original saw ``0``: refused. Source: DBB transform I
(arXiv:2103.13425); AIMET-style "BN before conv" folding, generalised to any groups.
"""

from __future__ import annotations

from reparam.convspec import conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.patterns import Affine, Bindings, Into, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold
from reparam.transforms import fold_affine_before


class FoldNormBeforeConv(PatternRule):
    """Replaces norm → conv with one conv where the border allows it."""

    name = "norm_conv"
    summary = "batch norm or per-channel scale before a conv (exact cases only)"
    pattern = "conv(affine(x))"
    refuses_when = (
        "the norm uses batch statistics",
        "the conv zero-pads and the affine has a non-zero shift (border would differ)",
        "the affine output is used elsewhere",
    )
    graph_pattern = Into(Affine().bind("affine"), Module(is_plain_conv, label="conv").bind("conv"))

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, conv_node, conv = m["affine"], m["conv"], m.module("conv")
        if isinstance(affine, Refusal):
            return affine
        spec = spec_from_conv(conv)
        if affine.scale.numel() != spec.in_channels:
            return Refusal("affine and conv disagree on the channel count")
        if not affine.fits_rank(spec.dims + 2):
            return Refusal("the scale does not broadcast over the conv's channel dim")
        zero_padded = any(spec.is_padded) and spec.padding_mode == "zeros"
        if zero_padded and bool((affine.shift != 0).any()):
            return Refusal(
                f"conv '{ctx.qualified(conv_node.target)}' zero-pads its input and the "
                f"{affine.kind} adds a shift: border outputs would differ"
            )
        weight, bias = fold_affine_before(
            spec.weight,
            spec.bias,
            affine.scale.to(spec.weight),
            affine.shift.to(spec.weight),
            spec.groups,
        )
        new = conv_from_spec(spec.with_weights(weight, bias))
        return ChainPlan(conv_node, affine, new, f"{affine.kind} folded into the following conv")

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=True)

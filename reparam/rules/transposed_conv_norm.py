r"""Fold a per-channel affine (batch norm, ``x * gamma``) that follows a transposed conv.

.. math:: s\,(W^{\top} * x + b) + t = (W \cdot s)^{\top} * x + (s b + t)

where the scale multiplies the transposed weight ``(C_in, C_out/g, *k)`` along its
*output-channel* axis, dim 1, group by group (:func:`reparam.transforms.
fold_affine_after_transposed`). Exact for ConvTranspose1d/2d/3d with any stride, padding,
``output_padding``, dilation and groups. Source: RepVGG's BN fusion (arXiv:2101.03697).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from reparam.errors import Refusal
from reparam.graph.views import single_user
from reparam.patterns import Affine, Bindings, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext
from reparam.rules.chain import ChainPlan, apply_chain_fold
from reparam.transforms import fold_affine_after_transposed

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _is_transposed(module: nn.Module) -> bool:
    return type(module) in _TRANSPOSED


class FoldNormAfterTransposedConv(PatternRule):
    """Replaces transposed conv → norm with one transposed conv."""

    name = "transposed_conv_norm"
    summary = (
        "transposed conv (1d/2d/3d, groups, output_padding, dilation) followed by a batch norm "
        "or per-channel scale"
    )
    pattern = "affine(conv_transpose(x))"
    refuses_when = (
        "the norm uses batch statistics (training mode, no running stats)",
        "the transposed conv's output is used by another node too",
        "the channel counts disagree or the pads are not zeros",
    )
    graph_pattern = Affine(
        Module(_is_transposed, label="transposed conv", refuse_opaque=True).bind("conv")
    ).bind("affine")

    def check(self, m: Bindings, ctx: RuleContext) -> ChainPlan | Refusal:
        affine, node, conv = m["affine"], m["conv"], m.module("conv")
        if isinstance(affine, Refusal):
            return affine
        if not single_user(node):
            return Refusal(
                f"output of '{ctx.qualified(node.target)}' is also used elsewhere; "
                "folding would change that use"
            )
        if affine.scale.numel() != conv.out_channels:
            return Refusal(f"norm has {affine.scale.numel()} channels, conv {conv.out_channels}")
        if not affine.fits_rank(conv.weight.dim()):
            return Refusal("the scale does not broadcast over the conv's channel dim")
        if conv.padding_mode != "zeros":
            return Refusal(f"transposed conv with padding_mode '{conv.padding_mode}'")
        if not conv.weight.dtype.is_floating_point:
            return Refusal("weights are not floating point")
        weight, bias = fold_affine_after_transposed(
            conv.weight.detach(),
            None if conv.bias is None else conv.bias.detach(),
            affine.scale.to(conv.weight),
            affine.shift.to(conv.weight),
            conv.groups,
        )
        new = copy.deepcopy(conv)
        with torch.no_grad():
            new.weight = nn.Parameter(weight)
            new.bias = nn.Parameter(bias)
        return ChainPlan(node, affine, new, f"{affine.kind} folded into transposed conv")

    def rewrite(self, plan: ChainPlan, ctx: RuleContext) -> Rewrite:
        return apply_chain_fold(plan, ctx, self.name, affine_first=False)

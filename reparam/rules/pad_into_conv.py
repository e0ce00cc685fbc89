r"""Fold an explicit zero pad in front of a conv into the conv's own padding.

.. math:: W * \operatorname{pad}_0^{p}(x) \text{ (conv padding } q) = W * x
          \text{ with padding } p + q

Exact when the pad is a constant-zero pad of the spatial dims and the conv pads with zeros
(or not at all). Asymmetric totals are only expressible as ``padding='same'`` at stride 1.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn
from torch.fx import Node

from reparam.convspec import conv_from_spec, is_plain_conv, spec_from_conv
from reparam.errors import Refusal
from reparam.graph.bias_pad import zero_pad_args
from reparam.graph.views import single_user
from reparam.patterns import Bindings, Module, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext


class FoldPadIntoConv(PatternRule):
    """Replaces conv(pad(x)) with one conv."""

    name = "pad_into_conv"
    summary = "explicit zero pad before a conv → the conv's padding"
    pattern = "conv(F.pad(x, p))"
    refuses_when = (
        "the conv pads with a non-zero mode",
        "the pad reaches the channel or batch dim",
        "the total padding is asymmetric at stride > 1",
        "the padded tensor is used elsewhere",
        "the pad is negative (a crop; see parallel_branches for crops before a conv)",
    )
    graph_pattern = Module(
        is_plain_conv,
        Where(lambda n, _: zero_pad_args(n) is not None, "a zero pad").bind("pad"),
        label="conv",
    ).bind("conv")

    def check(self, m: Bindings, ctx: RuleContext) -> tuple[Node, Node, nn.Module] | Refusal:
        conv_node, pad = m["conv"], m["pad"]
        spec = spec_from_conv(m.module("conv"))
        pads = zero_pad_args(pad)
        if len(pads) > 2 * spec.dims or len(pads) % 2:
            return Refusal("the pad reaches the channel or batch dim")
        if any(spec.is_padded) and spec.padding_mode != "zeros":
            return Refusal(f"the conv pads with mode '{spec.padding_mode}'")
        if not single_user(pad):
            return Refusal("the padded tensor is used elsewhere")
        if any(p < 0 for p in pads):
            # a crop, then the conv's zero padding: the conv must not read the cropped pixels
            # where it read zeros, so no padding of the uncropped input is the same
            return Refusal("negative pad (a crop): not a padding of the conv's input")
        extra = [(0, 0)] * spec.dims
        for i in range(len(pads) // 2):  # F.pad lists the last dim first
            extra[spec.dims - 1 - i] = (pads[2 * i], pads[2 * i + 1])
        padding = tuple((a + c, b + d) for (a, b), (c, d) in zip(spec.padding, extra, strict=True))
        if any(p < 0 for pair in padding for p in pair):
            return Refusal("negative padding (cropping)")
        try:
            module = conv_from_spec(replace(spec, padding=padding, padding_mode="zeros"))
        except ValueError as err:
            return Refusal(str(err))
        return conv_node, pad, module

    def rewrite(self, plan: tuple[Node, Node, nn.Module], ctx: RuleContext) -> Rewrite:
        conv_node, pad, module = plan
        site = ctx.site_name(conv_node)
        exclusive = ctx.exclusive_reason(conv_node) is None
        near = ctx.owner_path(conv_node)
        ctx.tx.substitute(conv_node, module, stem="reparam_padded", exclusive=exclusive, near=near)
        ctx.tx.set_input(conv_node, 0, pad.args[0])
        ctx.tx.erase_unused([pad])
        return Rewrite(self.name, site, "zero pad folded into the conv's padding")

r"""Locality Injection: convs on h×w partitions, parallel to an FC on the same partitions,
merge into the FC (RepMLP, arXiv:2105.01883 Sec. 3.3; RepMLPNet, arXiv:2112.11081).

A stride-1 "same" conv on an ``h×w`` map is a linear map of the flattened map, so with
``P`` the partitions ``(N', C, h, w)`` and the FC applied to ``P`` flattened to ``C·h·w``:

.. math:: A(\mathrm{FC}(\operatorname{vec} P)) + \sum_k \operatorname{vec}\,\mathrm{conv}_k(P)
          = \big(\operatorname{diag}(s) W + \sum_k M_k\big) \operatorname{vec} P
            + \big(s \odot b + t + \sum_k \beta_k\big)

where ``A = (s, t)`` are the per-feature affines after the FC (a BatchNorm1d over ``O·h·w``
features, or a BatchNorm2d over the ``(N', O, h, w)`` view whose values repeat over the
``h·w`` positions) and ``M_k`` is the conv's matrix, the conv's response to the one-hot
basis, written entry by entry from its taps (:func:`reparam.transforms.conv_to_fc`), ``β_k``
its bias repeated over positions. The FC may be a grouped 1×1 conv over ``C·h·w`` channels
(the paper's form; the conv's groups must refine the FC's) or an ``nn.Linear``. Exact for
any ``C ≠ O``, any groups, any dtype: each partition is convolved as its own zero-padded
image, which is exactly what the matrix reproduces. An identity branch (``P`` itself) adds
the identity matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import Node

from reparam.convspec import spec_from_conv
from reparam.errors import Refusal
from reparam.fcspec import fc_like, is_fc
from reparam.graph.scope import ScopeView
from reparam.graph.views import AffineView, channel_affine, single_user
from reparam.patterns import AllOf, Bindings, Call, Given, Module, Sum, Through, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms import fold_affine_after, inject_convs

_RESHAPES = ("reshape", "view", "flatten")


def _affine(node: Node, ctx: ScopeView) -> AffineView | None:
    view = channel_affine(node, ctx.root)
    return view if isinstance(view, AffineView) and isinstance(view.input, Node) else None


def _is_post_op(node: Node, ctx: ScopeView) -> bool:
    return _affine(node, ctx) is not None or (
        Call(_RESHAPES).accepts(node) and isinstance(node.args[0], Node)
    )


def _post_input(node: Node, ctx: ScopeView) -> object:
    view = _affine(node, ctx)
    return node.args[0] if view is None else view.input


@dataclass
class _Partners:
    convs: list[Node]
    identity: list[Node]
    others: list[Node]


def _partners(term: Node, b: Bindings, ctx: ScopeView) -> _Partners | None:
    """The other terms of the sum: convs reading P (each read once), P itself, the rest."""
    source, found = b["P"], _Partners([], [], [])
    for t in b["sum"].terms:
        if t is term:
            continue
        if t is source:
            found.identity.append(t)
        elif (
            t.op == "call_module"
            and isinstance(ctx.module(t.target), nn.Conv2d)
            and t.args[0] is source
            and single_user(t)
        ):
            found.convs.append(t)
        else:
            found.others.append(t)
    return found if found.convs or found.identity else None


#: FC(flatten(P)), then per-channel affines and reshapes, each read once
_FC_BRANCH = Through(
    Where(_is_post_op, "a per-channel affine or a reshape"),
    Module(
        is_fc,
        Call(_RESHAPES, Where(lambda n, v: True, "a tensor").bind("P")).single_user(),
        label="FC (Linear or 1×1 conv)",
    )
    .bind("fc")
    .single_user(),
    step=_post_input,
)


@dataclass
class _Match:
    root: Node
    fc: Node
    term: Node
    source: Node  # P, (N', C, h, w)
    affines: list[tuple[AffineView, tuple[int, ...] | None]]
    convs: list[Node]
    identity: list[Node]
    others: list[Node]


@dataclass
class _Plan:
    match: _Match
    module: nn.Module
    detail: str
    absmax_before: float


class LocalityInjection(PatternRule):
    """Replaces an FC on partitions plus parallel convs on the same partitions with the FC."""

    name = "locality_injection"
    summary = "convs on h×w partitions parallel to an FC on the flattened partitions → the FC"
    pattern = "affine(reshape(FC(flatten(P)))) + Σ_k conv_k(P)"
    refuses_when = (
        "shapes are unknown (pass example_inputs)",
        "a conv strides, pads with a non-zero mode, or changes the partition size",
        "a conv's groups do not refine the FC's groups",
        "an intermediate tensor is used elsewhere",
    )
    graph_pattern = Sum(
        whole=True,
        some=AllOf(
            _FC_BRANCH.bind("post"),
            Given(
                _partners,
                "a sum with a conv on the FC's partitions or the partitions themselves",
                reason="no other term is a conv on the FC's partitions or the partitions",
                quiet=True,
            ).bind("partners"),
        ).bind("term"),
    ).bind("sum")
    near_miss_depth = 4  # the sum, the FC and two more steps (not every residual add)

    def check(self, b: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        p: _Partners = b["partners"]
        affines = [(v, ctx.shape(n)) for n in reversed(b["post"]) if (v := _affine(n, ctx))]
        m = _Match(
            b["sum"].root, b["fc"], b["term"], b["P"], affines, p.convs, p.identity, p.others
        )
        p_shape, out_shape = ctx.shape(m.source), ctx.shape(m.term)
        if p_shape is None or out_shape is None:
            return Refusal("partition shapes are unknown; pass example_inputs")
        if len(p_shape) != 4 or len(out_shape) != 4 or out_shape[2:] != p_shape[2:]:
            return Refusal(
                f"the FC branch maps {p_shape} to {out_shape}: not an FC on h×w partitions"
            )
        _, cin, h, w = p_shape
        cout = out_shape[1]
        fc = ctx.module(m.fc.target)
        if isinstance(fc, nn.Linear):
            groups, weight = 1, fc.weight.detach()
            if (fc.in_features, fc.out_features) != (cin * h * w, cout * h * w):
                return Refusal("the linear does not map C·h·w to O·h·w features")
        else:
            groups, weight = fc.groups, fc.weight.detach().flatten(1)
            if (fc.in_channels, fc.out_channels) != (cin * h * w, cout * h * w):
                return Refusal("the 1×1 conv does not map C·h·w to O·h·w channels")
        if ctx.shape(m.fc.args[0]) is None or ctx.shape(m.fc.args[0])[0] != p_shape[0]:
            return Refusal("the flatten before the FC does not keep one row per partition")
        bias = fc.bias.detach() if fc.bias is not None else None
        for view, shape in m.affines:
            if shape is None or shape[0] != p_shape[0]:
                return Refusal("an affine after the FC acts on an unknown or mixed layout")
            per = math.prod(shape[2:]) if len(shape) > 2 else 1
            if view.scale.numel() * per != cout * h * w:
                return Refusal("an affine after the FC does not cover its output features")
            if not view.fits_rank(len(shape)):
                return Refusal("a scale after the FC does not broadcast over dim 1")
            scale = view.scale.to(weight).repeat_interleave(per)
            shift = view.shift.to(weight).repeat_interleave(per)
            weight, bias = fold_affine_after(weight, bias, scale, shift)
        specs = [spec_from_conv(ctx.module(c.target)) for c in m.convs]
        for spec in specs:
            if spec.in_channels != cin or spec.out_channels != cout:
                return Refusal("a conv's channels differ from the FC's partitions")
            if spec.stride != (1, 1) or spec.size_signature() != (0, 0):
                return Refusal("a conv strides or changes the partition size")
            if any(left != right for left, right in spec.padding):
                return Refusal("a conv pads asymmetrically")
            if spec.padding_mode != "zeros" and any(spec.is_padded):
                return Refusal(
                    f"a conv pads with mode '{spec.padding_mode}'; the FC equivalent "
                    "is derived for zero padding"
                )
            if spec.groups % groups:
                return Refusal(f"conv groups {spec.groups} do not refine the FC's {groups} groups")
        if m.identity and cin != cout:
            return Refusal("an identity branch needs C == O")
        before = absmax(fc.weight, *(ctx.module(c.target).weight for c in m.convs))
        blocks, total_bias = inject_convs(
            weight.reshape(groups, cout * h * w // groups, -1), bias, specs, h, w, len(m.identity)
        )
        del weight  # the FC's (folded) weight: only the float64 merge is needed now
        new = fc_like(fc, blocks, total_bias, groups)  # rounded once to the FC's dtype
        del blocks
        kinds = [f"conv{'×'.join(map(str, ctx.module(c.target).kernel_size))}" for c in m.convs]
        kinds += ["identity"] * len(m.identity)
        detail = (
            f"{len(kinds)} branch(es) ({', '.join(kinds)}) and {len(m.affines)} "
            f"norm(s) injected into the FC on {h}×{w} partitions"
        )
        return _Plan(m, new, detail, before)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        m, tx = plan.match, ctx.tx
        site = ctx.site_name(m.root)
        exclusive = ctx.exclusive_reason(m.fc) is None
        tx.substitute(
            m.fc, plan.module, stem="reparam_fc", exclusive=exclusive, near=ctx.owner_path(m.fc)
        )
        for view, _ in m.affines:
            if view.node.op == "call_module" and ctx.exclusive_reason(view.node) is None:
                tx.place(view.node.target, nn.Identity())
        value = m.term
        for view, _ in reversed(m.affines):  # outermost first
            if view.node is value:
                value = view.input
        for view, _ in m.affines:
            tx.redirect(view.node, view.input)
        for other in m.others:
            value = tx.insert_function(torch.add, (value, other), before=m.root)
        tx.redirect(m.root, value)
        tx.erase_unused([m.root, *(v.node for v, _ in m.affines)])
        return Rewrite(
            self.name, site, plan.detail, 0, 0, plan.absmax_before, absmax(plan.module.weight)
        )

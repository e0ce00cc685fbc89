r"""Locality Injection: convs on h×w partitions, parallel to an FC on the same partitions,
merge into the FC (RepMLP, arXiv:2105.01883 Sec. 3.3; RepMLPNet, arXiv:2112.11081).

A stride-1 "same" conv on an ``h×w`` map is a linear map of the flattened map, so with
``P`` the partitions ``(N', C, h, w)`` and the FC applied to ``P`` flattened to ``C·h·w``:

.. math:: A(\mathrm{FC}(\operatorname{vec} P)) + \sum_k \operatorname{vec}\,\mathrm{conv}_k(P)
          = \big(\operatorname{diag}(s) W + \sum_k M_k\big) \operatorname{vec} P
            + \big(s \odot b + t + \sum_k \beta_k\big)

where ``A = (s, t)`` are the per-feature affines after the FC (a BatchNorm1d over ``O·h·w``
features, or a BatchNorm2d over the ``(N', O, h, w)`` view whose values repeat over the
``h·w`` positions) and ``M_k`` is the conv's matrix, obtained by pushing the one-hot basis
through the conv (:func:`reparam.transforms.conv_to_fc`), ``β_k`` its bias repeated over
positions. The FC may be a grouped 1×1 conv over ``C·h·w`` channels (the paper's form; the
conv's groups must refine the FC's) or an ``nn.Linear``. Exact for any ``C ≠ O``, any groups,
any dtype: each partition is convolved as its own zero-padded image, which is exactly what
the matrix reproduces. An identity branch (``P`` itself) adds the identity matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import Node

from reparam.convspec import spec_from_conv
from reparam.errors import Refusal
from reparam.graph.views import (
    AffineView,
    channel_affine,
    is_sum_root,
    single_user,
    sum_terms,
    value_users,
)
from reparam.rules.base import Rewrite, Rule, RuleContext, absmax
from reparam.rules.fc_module import fc_like
from reparam.transforms import fold_affine_after, inject_convs

_RESHAPES = {"reshape", "view", "flatten"}


def _is_reshape(node: Node) -> bool:
    if node.op == "call_method":
        return node.target in _RESHAPES
    if node.op == "call_function":
        return getattr(node.target, "__name__", "") in ("reshape", "flatten")
    return False


@dataclass
class _FcChain:
    term: Node
    fc: Node
    source: Node  # P, (N', C, h, w)
    affines: list[tuple[AffineView, tuple[int, ...]]] = field(default_factory=list)


def _fc_chain(term: Node, ctx: RuleContext) -> _FcChain | None:
    node, affines = term, []
    while len(value_users(node)) <= 1 or node is term:
        view = channel_affine(node, ctx.root)
        if isinstance(view, AffineView) and isinstance(view.input, Node):
            affines.append((view, ctx.shape(node)))
            node = view.input
        elif _is_reshape(node) and isinstance(node.args[0], Node):
            node = node.args[0]
        else:
            break
        if not single_user(node):
            return None
    if node.op != "call_module":
        return None
    module = ctx.module(node.target)
    is_fc = isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding == (0, 0)
        and module.dilation == (1, 1)
    )
    if not is_fc:
        return None
    flat = node.args[0]
    if not (
        isinstance(flat, Node)
        and _is_reshape(flat)
        and single_user(flat)
        and isinstance(flat.args[0], Node)
    ):
        return None
    return _FcChain(term, node, flat.args[0], list(reversed(affines)))


@dataclass
class _Match:
    root: Node
    chain: _FcChain
    convs: list[Node]
    identity: list[Node]
    others: list[Node]


@dataclass
class _Plan:
    match: _Match
    module: nn.Module
    detail: str
    absmax_before: float


class LocalityInjection(Rule):
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

    def match(self, node: Node, ctx: RuleContext) -> _Match | None:
        if not is_sum_root(node):
            return None
        view = sum_terms(node)
        if view is None:
            return None
        for term in view.terms:
            chain = _fc_chain(term, ctx)
            if chain is None:
                continue
            convs, identity, others = [], [], []
            for t in view.terms:
                if t is term:
                    continue
                if t is chain.source:
                    identity.append(t)
                elif (
                    t.op == "call_module"
                    and isinstance(ctx.module(t.target), nn.Conv2d)
                    and t.args[0] is chain.source
                    and single_user(t)
                ):
                    convs.append(t)
                else:
                    others.append(t)
            if convs or identity:
                return _Match(node, chain, convs, identity, others)
        return None

    def check(self, m: _Match, ctx: RuleContext) -> _Plan | Refusal:
        chain = m.chain
        p_shape, out_shape = ctx.shape(chain.source), ctx.shape(chain.term)
        if p_shape is None or out_shape is None:
            return Refusal("partition shapes are unknown; pass example_inputs")
        if len(p_shape) != 4 or len(out_shape) != 4 or out_shape[2:] != p_shape[2:]:
            return Refusal(
                f"the FC branch maps {p_shape} to {out_shape}: not an FC on h×w partitions"
            )
        _, cin, h, w = p_shape
        cout = out_shape[1]
        fc = ctx.module(chain.fc.target)
        if isinstance(fc, nn.Linear):
            groups, weight = 1, fc.weight.detach()
            if (fc.in_features, fc.out_features) != (cin * h * w, cout * h * w):
                return Refusal("the linear does not map C·h·w to O·h·w features")
        else:
            groups, weight = fc.groups, fc.weight.detach().flatten(1)
            if (fc.in_channels, fc.out_channels) != (cin * h * w, cout * h * w):
                return Refusal("the 1×1 conv does not map C·h·w to O·h·w channels")
        if ctx.shape(chain.fc.args[0]) is None or ctx.shape(chain.fc.args[0])[0] != p_shape[0]:
            return Refusal("the flatten before the FC does not keep one row per partition")
        bias = fc.bias.detach() if fc.bias is not None else None
        for view, shape in chain.affines:
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
        blocks, total_bias = inject_convs(
            weight.reshape(groups, cout * h * w // groups, -1), bias, specs, h, w, len(m.identity)
        )
        merged = blocks.reshape(cout * h * w, -1).to(weight.dtype)
        total_bias = total_bias.to(weight.dtype)
        new = fc_like(fc, merged, total_bias, groups)
        kinds = [f"conv{'×'.join(map(str, ctx.module(c.target).kernel_size))}" for c in m.convs]
        kinds += ["identity"] * len(m.identity)
        detail = (
            f"{len(kinds)} branch(es) ({', '.join(kinds)}) and {len(chain.affines)} "
            f"norm(s) injected into the FC on {h}×{w} partitions"
        )
        before = absmax(fc.weight, *(ctx.module(c.target).weight for c in m.convs))
        return _Plan(m, new, detail, before)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        m = plan.match
        chain = m.chain
        site = ctx.site_name(m.root)
        if ctx.exclusive_reason(chain.fc) is None:
            ctx.set_module(chain.fc.target, plan.module)
        else:
            path = ctx.fresh_path(ctx.owner_path(chain.fc), "reparam_fc")
            ctx.set_module(path, plan.module)
            chain.fc.target = path
        for view, _ in chain.affines:
            if view.node.op == "call_module" and ctx.exclusive_reason(view.node) is None:
                ctx.set_module(view.node.target, nn.Identity())
        value = chain.term
        for view, _ in reversed(chain.affines):  # outermost first
            if view.node is value:
                value = view.input
        for view, _ in chain.affines:
            view.node.replace_all_uses_with(view.input)
        fc_out = value
        for other in m.others:
            with ctx.graph.inserting_before(m.root):
                value = ctx.graph.call_function(torch.add, (value, other))
        m.root.replace_all_uses_with(value)
        ctx.erase_unused(
            [m.root, *(v.node for v, _ in chain.affines)],
            same_shape_as=fc_out,
        )
        return Rewrite(
            self.name, site, plan.detail, 0, 0, plan.absmax_before, absmax(plan.module.weight)
        )

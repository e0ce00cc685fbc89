r"""Merge parallel branches of one input that are summed into one conv.

Every branch term is an affine map of the shared input ``x`` written as a conv:
a conv (any kernel size, asymmetric ``1×k``/``k×1``, dilated), the identity (a one-hot
centre kernel), a per-channel affine of ``x`` (a norm-only identity, ``x * gamma``), or an
average pool with ``count_include_pad=True`` (a ``1/k²`` depthwise kernel), or a conv / average
pool after another conv (DBB's 1×1 → avg-pool and 1×1 → k×k branches, ECBSR's 1×1 → Sobel /
Laplacian branches; the two compose into one kernel, see :mod:`reparam.convspec_chain`, also
through DBB's "pad with the 1×1's bias"), each optionally followed by a per-channel affine.
Convolution is linear in the kernel, so

.. math:: \sum_t (W_t * x + b_t) = \Big(\sum_t \operatorname{pad}(W_t)\Big) * x + \sum_t b_t

once every kernel is placed in one frame: dilated kernels are expanded to dense
(``d(k-1)+1``), grouped kernels are regrouped to the coarsest common groups, and each kernel
is zero-padded at the offset that aligns its first tap. Sources: RepVGG (arXiv:2101.03697),
ACNet (arXiv:1908.03930), DBB transforms II/IV/VI (arXiv:2103.13425), MobileOne
(arXiv:2206.04040), RepLKNet (arXiv:2203.06717), UniRepLKNet (arXiv:2311.15599).

Exact when, per spatial dim: every branch has the same stride and produces the same output
grid (equal ``left+right-extent`` padding signature, and first taps that the merged kernel
can hold), and every branch that pads uses the padding mode of the merged conv (zero padding
of one branch cannot be reproduced by reflect padding of another, and vice versa).
Declined (unless ``allow_slower``) when the merged conv costs more multiply-accumulates than
the branch convs and average pools it replaces (:mod:`reparam.cost`, on the example input),
e.g. a lone dilated kernel expanded to a large dense one, a depthwise branch made dense by a
dense 1×1 beside it, or identity-like branches with no conv at all. The branches' memory
passes (norms, adds) always go away, so an accepted merge moves fewer bytes and never raises
the FLOP count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import Node

from reparam import cost
from reparam.convspec import ConvSpec, conv_from_spec, is_plain_conv, spec_from_conv
from reparam.convspec_chain import compose_specs, pool_spec
from reparam.errors import Refusal
from reparam.graph.bias_pad import bias_pad_match, fill_reason, zero_pad_args
from reparam.graph.crop import crop_of
from reparam.graph.views import SumView, channel_affine, is_sum_root, single_user, sum_terms
from reparam.rules.base import Rewrite, Rule, RuleContext, absmax
from reparam.transforms import avgpool_kernel, diagonal_kernel, fold_affine_after, regroup_kernel
from reparam.transforms.align import merge_specs

_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


@dataclass(eq=False)
class Term:
    """One summand as an affine map of ``source``."""

    node: Node  # the summand node
    source: Node  # the shared input
    kind: str  # conv | identity | affine | pool
    conv_node: Node | None = None  # call_module conv, when kind == conv
    pool: nn.Module | None = None
    affine: object | None = None  # AffineView applied last, if any
    spec: ConvSpec | None = None  # kind == chain: the composed conv (before ``affine``)
    layers: tuple = ()  # kind == chain: its two layers with their output shapes (for cost)
    crop: tuple[tuple[int, int], ...] | None = None  # kind == conv on a crop of ``source``
    reason: str = ""  # kind == chain: why the two layers do not compose (spec is None)


def _is_avgpool(module: nn.Module) -> bool:
    return isinstance(module, tuple(_POOLS.values()))


def classify(node: Node, ctx: RuleContext) -> Term:
    """Describe summand ``node`` as an affine map of some input node."""
    inner, affine = node, None
    view = channel_affine(node, ctx.root)
    if view is not None and not isinstance(view, Refusal) and single_user(node):
        src = view.input
        if (
            isinstance(src, Node)
            and src.op == "call_module"
            and single_user(src)
            and (is_plain_conv(ctx.module(src.target)) or _is_avgpool(ctx.module(src.target)))
        ):
            inner, affine = src, view
        else:
            return Term(node, src, "affine", affine=view)
    if inner.op == "call_module" and (single_user(inner) or inner is not node):
        module = ctx.module(inner.target)
        if single_user(inner) and isinstance(inner.args[0], Node):
            chain = _chain_term(node, inner, module, affine, ctx)
            if chain is not None:
                return chain
            if is_plain_conv(module):
                src = inner.args[0]
                crop = crop_of(src, ctx.shape(src)) if single_user(src) else None
                if crop is not None:
                    return Term(node, crop[0], "conv", conv_node=inner, affine=affine, crop=crop[1])
                return Term(node, src, "conv", conv_node=inner, affine=affine)
            if _is_avgpool(module):
                return Term(node, inner.args[0], "pool", pool=module, affine=affine)
    return Term(node, node, "identity")


def _chain_term(
    node: Node, second: Node, module: nn.Module, affine: object, ctx: RuleContext
) -> Term | None:
    """``second(first(x))`` (second a conv or avg pool, first a conv, maybe with DBB's
    pad-with-bias between them) as one composed conv term, when that composition is exact."""
    if not (is_plain_conv(module) or _is_avgpool(module)):
        return None
    inner = second.args[0]
    if not single_user(inner):
        return None
    bias_pad = bias_pad_match(inner, ctx)
    first = bias_pad.conv if bias_pad is not None else inner
    if not (first.op == "call_module" and is_plain_conv(ctx.module(first.target))):
        return None
    if not isinstance(first.args[0], Node) or not single_user(first):
        return None
    a = spec_from_conv(ctx.module(first.target))
    extra = None
    if bias_pad is not None:
        if not (single_user(bias_pad.sub) and single_user(bias_pad.pad)):
            return None
        pads = zero_pad_args(bias_pad.pad)
        if (
            any(k != 1 for k in a.kernel_size)
            or any(a.is_padded)
            or len(pads) > 2 * a.dims
            or len(pads) % 2
            or any(p < 0 for p in pads)
            or fill_reason(bias_pad, a, ctx)
        ):
            return None
        extra = [(0, 0)] * a.dims
        for i in range(len(pads) // 2):  # F.pad lists the last dim first
            extra[a.dims - 1 - i] = (pads[2 * i], pads[2 * i + 1])
        extra = tuple(extra)
    if is_plain_conv(module):
        b = spec_from_conv(module)
    else:
        b = pool_spec(module, a.out_channels, a.weight)
    spec = b if isinstance(b, str) else compose_specs(a, b, extra)
    if isinstance(spec, str):
        return Term(node, first.args[0], "chain", affine=affine, reason=spec)
    layers = (
        (a, ctx.call_shapes(first)),
        (b if is_plain_conv(module) else module, ctx.call_shapes(second)),
    )
    conv_node = second if is_plain_conv(module) else None
    pool = None if conv_node is not None else module
    return Term(
        node,
        first.args[0],
        "chain",
        conv_node=conv_node,
        pool=pool,
        affine=affine,
        spec=spec,
        layers=layers,
    )


def _as_spec(
    term: Term, channels: int, dims: int, groups: int, like: torch.Tensor, ctx: RuleContext
) -> ConvSpec | Refusal:
    ones = (1,) * dims
    zero_pad = tuple((0, 0) for _ in range(dims))
    if term.kind in ("conv", "chain"):
        spec = term.spec or spec_from_conv(ctx.module(term.conv_node.target))
        if term.crop is not None:
            spec = _cropped(spec, term.crop)
            if isinstance(spec, Refusal):
                return spec
        weight = regroup_kernel(spec.weight, spec.groups, groups)
        spec = ConvSpec(
            weight, spec.bias, spec.stride, spec.padding, spec.dilation, groups, spec.padding_mode
        )
    elif term.kind == "pool":
        pool = term.pool
        k = _tuple(pool.kernel_size, dims)
        s = _tuple(pool.stride if pool.stride is not None else pool.kernel_size, dims)
        p = _tuple(pool.padding, dims)
        if pool.ceil_mode:
            return Refusal("avg pool with ceil_mode=True has partial windows")
        if getattr(pool, "divisor_override", None):
            return Refusal("avg pool with divisor_override")
        if any(p) and not pool.count_include_pad:
            return Refusal(
                "avg pool with count_include_pad=False divides border windows by "
                "fewer taps: not a convolution"
            )
        weight = avgpool_kernel(channels, groups, k, like.dtype, like.device)
        spec = ConvSpec(weight, None, s, tuple((q, q) for q in p), ones, groups)
    else:
        values = torch.zeros((channels, *ones), dtype=like.dtype, device=like.device)
        values.fill_(1)
        spec = ConvSpec(diagonal_kernel(values, groups), None, ones, zero_pad, ones, groups)
    if term.affine is not None:
        affine = term.affine
        if not affine.fits_rank(dims + 2):
            return Refusal("a branch's scale does not broadcast over the channel dim")
        scale, shift = affine.scale, affine.shift
        if affine.all_ones:  # one factor for all channels
            scale, shift = scale.expand(spec.out_channels), shift.expand(spec.out_channels)
        if scale.numel() != spec.out_channels:
            return Refusal("a branch's norm disagrees with its channel count")
        w, b = fold_affine_after(spec.weight, spec.bias, scale.to(like), shift.to(like))
        spec = spec.with_weights(w, b)
    return spec


def _cropped(spec: ConvSpec, crop: tuple[tuple[int, int], ...]) -> ConvSpec | Refusal:
    """A conv on ``x`` cropped by ``crop``: the same conv on ``x`` with padding ``-crop``
    (its taps start ``crop`` further in), exact where the conv does not pad a cropped side;
    otherwise it would read real pixels where the original reads its zero padding."""
    if len(crop) != spec.dims:
        return Refusal("the crop and the conv disagree on the spatial rank")
    padding = []
    for d, ((lo, hi), (left, right)) in enumerate(zip(crop, spec.padding, strict=True)):
        if (lo and left) or (hi and right):
            return Refusal(
                f"the crop removes real pixels in spatial dim {d} that the conv then pads with "
                "zeros: no padding of the uncropped input reproduces that border"
            )
        padding.append((left - lo, right - hi))
    return ConvSpec(
        spec.weight,
        spec.bias,
        spec.stride,
        tuple(padding),
        spec.dilation,
        spec.groups,
        spec.padding_mode,
    )


def _bad_crop(term: Term, ctx: RuleContext) -> bool:
    spec = spec_from_conv(ctx.module(term.conv_node.target))
    return isinstance(_cropped(spec, term.crop), Refusal)


def _tuple(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


@dataclass
class BranchMatch:
    view: SumView
    source: Node
    terms: list[Term]
    others: list[Node]


@dataclass
class BranchPlan:
    match: BranchMatch
    module: nn.Module
    anchor: Node | None
    macs_before: int
    macs_after: int
    absmax_before: float
    detail: str


class MergeParallelBranches(Rule):
    """Replaces a sum of parallel linear branches of one input with one conv."""

    name = "parallel_branches"
    summary = (
        "summed branches of one input (convs of any size, 1×k/k×1, dilated, identity, "
        "norm-only identity, x*gamma, avg pool, conv/avg pool after a 1×1 (DBB, ECBSR), a conv "
        "on a crop of the input (ACNet)) → one conv"
    )
    pattern = (
        "sum_t branch_t(x), branch ∈ {conv, conv∘crop, identity, affine, avgpool, "
        "(conv|avgpool)∘[pad_b]∘conv}[∘ affine]"
    )
    refuses_when = (
        "branches differ in stride or output size (padding not centred alike)",
        "branches pad with different padding modes at a border they read",
        "a branch's intermediate output is used elsewhere",
        "identity-like branches with in ≠ out channels",
        "a two-layer branch does not compose (the second pads after a biased or k×k first, "
        "count_include_pad=False over padding)",
        "a branch crops a side of the input that its conv then zero-pads",
        "the merged conv would cost more multiply-adds than the branches (unless allow_slower)",
    )

    def match(self, node: Node, ctx: RuleContext) -> BranchMatch | None:
        if not is_sum_root(node):
            return None
        view = sum_terms(node)
        if view is None:
            return None
        terms = [classify(t, ctx) for t in view.terms]
        groups: dict[Node, list[Term]] = {}
        for t in terms:
            groups.setdefault(t.source, []).append(t)
        best = max(groups.values(), key=lambda ts: (len(ts), sum(t.kind == "conv" for t in ts)))
        if len(best) < 2 or all(t.kind == "identity" for t in best):
            return None
        others = [t.node for t in terms if t not in best]
        return BranchMatch(view, best[0].source, best, others)

    def check(self, m: BranchMatch, ctx: RuleContext) -> BranchPlan | Refusal:
        plan = self._check_terms(m, ctx)
        if not isinstance(plan, Refusal):
            return plan
        # the other branches may still merge, leaving two-layer / cropped ones as they are:
        # first without the ones that cannot merge at all, then without any of them
        bad = [t for t in m.terms if t.reason or (t.crop is not None and _bad_crop(t, ctx))]
        composite = [t for t in m.terms if t.kind == "chain" or t.crop is not None]
        for leave_out in (bad, composite):
            rest = [t for t in m.terms if all(t is not c for c in leave_out)]
            if not leave_out or len(rest) < 2 or all(t.kind == "identity" for t in rest):
                continue
            others = m.others + [t.node for t in leave_out]
            fallback = self._check_terms(BranchMatch(m.view, m.source, rest, others), ctx)
            if not isinstance(fallback, Refusal):
                return fallback
        return plan

    def _check_terms(self, m: BranchMatch, ctx: RuleContext) -> BranchPlan | Refusal:
        for t in m.terms:
            if t.reason:
                return Refusal(f"a two-layer branch does not compose: {t.reason}")
        convs = [t for t in m.terms if t.kind == "conv"]
        conv_modules = [
            t.spec if t.kind == "chain" else spec_from_conv(ctx.module(t.conv_node.target))
            for t in m.terms
            if t.kind in ("conv", "chain")
        ]
        dims_set = {c.dims for c in conv_modules}
        src_shape = ctx.shape(m.source)
        if dims_set:
            if len(dims_set) != 1:
                return Refusal("branches mix 1-D/2-D/3-D convs")
            dims = dims_set.pop()
        elif src_shape is not None:
            dims = len(src_shape) - 2
        else:
            pools = [t.pool for t in m.terms if t.kind == "pool"]
            if not pools:
                return Refusal(
                    "no conv among the branches and the input rank is unknown; pass example_inputs"
                )
            dims = next(d for d, cls in _POOLS.items() if isinstance(pools[0], cls))
        if conv_modules:
            in_ch = {c.in_channels for c in conv_modules}
            out_ch = {c.out_channels for c in conv_modules}
            if len(in_ch) != 1 or len(out_ch) != 1:
                return Refusal("conv branches differ in channel counts")
            cin, cout = in_ch.pop(), out_ch.pop()
            like = conv_modules[0].weight
            groups = math.gcd(*[c.groups for c in conv_modules])
        else:
            affines = [t.affine for t in m.terms if t.affine is not None]
            if affines:
                cin = affines[0].scale.numel()
                like = affines[0].scale
            elif src_shape is not None:
                cin = src_shape[1]
                like = None
            else:
                return Refusal("channel count unknown; pass example_inputs")
            cout = cin
            groups = cin
        if like is None:
            return Refusal("no weights to take dtype/device from")
        if not like.dtype.is_floating_point:
            return Refusal("weights are not floating point")
        diagonal = [t for t in m.terms if t.kind not in ("conv", "chain")]
        if diagonal and cin != cout:
            return Refusal(f"an identity-like branch needs in == out channels ({cin} ≠ {cout})")
        if diagonal and cin % groups:
            return Refusal("channels do not divide into the conv groups")
        if src_shape is not None and len(src_shape) != dims + 2:
            return Refusal(f"input of rank {len(src_shape)} to {dims}-D branches")
        for t in m.terms:
            if t.kind == "conv":
                reason = ctx.exclusive_reason(t.conv_node)
                if reason and t.conv_node is not t.node and not single_user(t.conv_node):
                    return Refusal(reason)
        specs = []
        for t in m.terms:
            spec = _as_spec(t, cin, dims, groups, like, ctx)
            if isinstance(spec, Refusal):
                return spec
            specs.append(spec)
        merged = merge_specs(specs)
        if isinstance(merged, Refusal):
            return merged
        # Cost (reparam.cost): the branch convs' and pools' multiply-adds. The identity /
        # norm branches and the adds are memory passes that the merge removes for free, so
        # a merged conv that costs no more is faster and never raises the FLOP count.
        removed = [
            (spec_from_conv(ctx.module(t.conv_node.target)), ctx.call_shapes(t.conv_node))
            for t in convs
        ]
        removed += [layer for t in m.terms if t.kind == "chain" for layer in t.layers]
        removed += [(t.pool, ctx.call_shapes(t.node)) for t in m.terms if t.kind == "pool"]
        before, after, exact = cost.compare(removed, [(merged, ctx.call_shapes(m.terms[0].node))])
        if after > before and not ctx.allow_slower:
            return Refusal(cost.slower_reason(before, after, exact))
        try:
            module = conv_from_spec(merged)
        except ValueError as err:
            return Refusal(str(err))
        anchor = None
        ranked = sorted(
            convs, key=lambda t: -math.prod(ctx.module(t.conv_node.target).weight.shape[2:])
        )
        for t in ranked:
            if ctx.exclusive_reason(t.conv_node) is None:
                anchor = t.conv_node
                break
        kinds = ", ".join(sorted(_describe(t, ctx) for t in m.terms))
        return BranchPlan(
            m,
            module,
            anchor,
            before,
            after,
            absmax(*(s.weight for s in specs)),
            f"merged {len(m.terms)} branches: {kinds}",
        )

    def rewrite(self, plan: BranchPlan, ctx: RuleContext) -> Rewrite:
        m = plan.match
        root = m.view.root
        site = ctx.site_name(root)
        if plan.anchor is not None:
            path = plan.anchor.target
            ctx.set_module(path, plan.module)
        else:
            path = ctx.fresh_path(ctx.owner_path(root), "reparam_conv")
            ctx.set_module(path, plan.module)
        new = ctx.call(path, (m.source,), before=root)
        value = new
        for other in m.others:
            with ctx.graph.inserting_before(root):
                value = ctx.graph.call_function(torch.add, (value, other))
        root.replace_all_uses_with(value)
        ctx.erase_unused([root], same_shape_as=new)
        return Rewrite(
            self.name,
            site,
            plan.detail,
            plan.macs_before,
            plan.macs_after,
            plan.absmax_before,
            absmax(plan.module.weight),
        )


def _describe(t: Term, ctx: RuleContext) -> str:
    if t.kind == "conv":
        k = "×".join(map(str, ctx.module(t.conv_node.target).kernel_size))
        base = f"conv{k}"
    elif t.kind == "chain":
        base = f"conv→{'conv' if t.conv_node is not None else 'avgpool'}"
    else:
        base = t.kind if t.kind != "affine" else t.affine.kind
    return base + ("+norm" if t.affine is not None and t.kind != "affine" else "")

r"""Merge parallel branches of one input that are summed into one conv.

Every branch term is an affine map of the shared input ``x`` written as a conv:
a conv (any kernel size, asymmetric ``1×k``/``k×1``, dilated), the identity (a one-hot
centre kernel), a per-channel affine of ``x`` (a norm-only identity, ``x * gamma``), or an
average pool with ``count_include_pad=True`` (a ``1/k²`` depthwise kernel), or a conv / average
pool after another conv (DBB's 1×1 → avg-pool and 1×1 → k×k branches, ECBSR's 1×1 → Sobel /
Laplacian branches; the two compose into one kernel, see :mod:`reparam.convspec_chain`, also
through DBB's "pad with the 1×1's bias"), or a conv on a crop of ``x`` (ACNet; the same conv
with less padding, :func:`reparam.transforms.crop_as_padding`), each optionally followed by a
per-channel affine. Convolution is linear in the kernel, so

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

The terms of a sum may read different inputs: the largest set of terms of one input merges
(ties: the one with more convs), the other terms are added to the merged conv. A term whose
inner layer is also read elsewhere is not a branch of its input (it is an identity of
itself). When the merge is refused because of two-layer or cropped branches, the others may
still merge without them.
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
from reparam.graph.bias_pad import bias_pad_of, bias_padded, input_pad
from reparam.graph.crop import CROP, Crop
from reparam.graph.views import AffineView, SumView, single_user
from reparam.patterns import Affine, AllOf, Any_, AnyOf, Bindings, Given, Module, Sum, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms import avgpool_kernel, diagonal_kernel, fold_affine_after, regroup_kernel
from reparam.transforms.align import crop_as_padding, merge_specs

_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _is_avgpool(module: nn.Module) -> bool:
    return isinstance(module, tuple(_POOLS.values()))


# -- the pattern ------------------------------------------------------------------------------
#
# One pattern per kind of term, tried in this order; what a term binds says its kind:
#   second, first (input_pad)  second(first(x)), maybe through DBB's pad with first's bias
#   conv, crop                 conv(x[crop])
#   conv                       conv(x)
#   pool                       avgpool(x)
#   affine (+ one of those)    affine(...) of one of those, or affine(x) alone
#   nothing                    x itself (the identity; also any term of another shape)
# Every layer inside a term is read by that term only (else the term is the identity of
# itself, and merges with nothing).

_TENSOR = Where(lambda node, view: True, "a tensor")
_FIRST = Module(is_plain_conv, _TENSOR, label="conv").bind("first")


def _dbb_pad(add: Node, b: Bindings, view: RuleContext) -> tuple[tuple[int, int], ...] | None:
    """DBB's pad with the 1×1 ``first``'s bias as a zero pad of its input (None if not one)."""
    m = bias_pad_of(b, conv="first")
    if not (single_user(m.conv) and single_user(m.sub) and single_user(m.pad)):
        return None
    return input_pad(m, spec_from_conv(b.module("first")), view)


_CHAIN = Module(
    lambda m: is_plain_conv(m) or _is_avgpool(m),
    AnyOf(
        AllOf(bias_padded(_FIRST), Given(_dbb_pad, "DBB's pad with the bias").bind("input_pad")),
        _FIRST.single_user(),
    ).single_user(),
    label="conv or avg pool",
).bind("second")
_CONV_ON_CROP = Module(is_plain_conv, CROP.bind("crop").single_user(), label="conv").bind("conv")
_CONV = Module(is_plain_conv, _TENSOR, label="conv").bind("conv")
_POOL = Module(_is_avgpool, _TENSOR, label="avg pool").bind("pool")
_LINEAR = AnyOf(_CHAIN, _CONV_ON_CROP, _CONV, _POOL).single_user()
_TERM = AnyOf(
    Affine(_LINEAR, eval_only=True).bind("affine").single_user(),
    Affine(eval_only=True).bind("affine").single_user(),
    _LINEAR,
    Any_(),
).bind("term")


@dataclass(eq=False)
class Term:
    """One summand as an affine map of ``source``."""

    node: Node  # the summand node
    source: Node  # the input it reads
    kind: str  # conv | chain | pool | affine | identity
    conv_node: Node | None = None  # the conv (kind conv); the second layer if a conv (chain)
    pool: nn.Module | None = None  # the avg pool (kind pool); the second layer if one (chain)
    affine: AffineView | None = None  # applied last, if any
    crop: Crop | None = None  # kind conv: it reads this crop of ``source``
    first: Node | None = None  # kind chain: the first conv ...
    second: Node | None = None  # ... and the layer after it
    input_pad: tuple[tuple[int, int], ...] | None = None  # chain: DBB's pad, moved before first
    # kind chain, set by ``_compose`` in check: the composed conv (before ``affine``) and the
    # two layers with their output shapes (for cost), or why the two do not compose
    spec: ConvSpec | None = None
    layers: tuple = ()
    reason: str = ""


def _read_term(b: Bindings) -> Term:
    """The :class:`Term` of one summand's bindings."""
    node, affine = b["term"], b.get("affine")
    if "first" in b:
        second = b["second"]
        conv = second if is_plain_conv(b.module("second")) else None
        pool = None if conv is not None else b.module("second")
        return Term(
            node,
            b["first"].args[0],
            "chain",
            conv_node=conv,
            pool=pool,
            affine=affine,
            first=b["first"],
            second=second,
            input_pad=b.get("input_pad"),
        )
    if "crop" in b:
        source, crop = b["crop"]
        return Term(node, source, "conv", conv_node=b["conv"], affine=affine, crop=crop)
    if "conv" in b:
        return Term(node, b["conv"].args[0], "conv", conv_node=b["conv"], affine=affine)
    if "pool" in b:
        return Term(node, b["pool"].args[0], "pool", pool=b.module("pool"), affine=affine)
    if affine is not None:
        return Term(node, affine.input, "affine", affine=affine)
    return Term(node, node, "identity")


@dataclass
class BranchMatch:
    view: SumView
    source: Node
    terms: list[Term]
    others: list[Node]


def _branches(root: Node, b: Bindings, view: RuleContext) -> BranchMatch | None:
    """The terms of the largest set that reads one input (ties: more convs), when it has two
    or more and not only identities; the other terms are added to the merged conv."""
    terms = [_read_term(t) for t in b.each("sum")]
    groups: dict[Node, list[Term]] = {}
    for t in terms:
        groups.setdefault(t.source, []).append(t)
    best = max(groups.values(), key=lambda ts: (len(ts), sum(t.kind == "conv" for t in ts)))
    if len(best) < 2 or all(t.kind == "identity" for t in best):
        return None
    others = [t.node for t in terms if t not in best]
    return BranchMatch(b["sum"], best[0].source, best, others)


@dataclass
class BranchPlan:
    match: BranchMatch
    module: nn.Module
    anchor: Node | None
    macs_before: int
    macs_after: int
    absmax_before: float
    detail: str


class MergeParallelBranches(PatternRule):
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
    # every term matches some reading (the identity at worst): only the grouping can fail,
    # quietly (a sum of unrelated terms is no near-miss)
    graph_pattern = AllOf(
        Sum(_TERM, whole=True).bind("sum"),
        Given(_branches, "two or more branches of one input", quiet=True).bind("branches"),
    )

    def check(self, b: Bindings, ctx: RuleContext) -> BranchPlan | Refusal:
        m: BranchMatch = b["branches"]
        for t in m.terms:
            if t.kind == "chain" and t.spec is None and not t.reason:
                _compose(t, ctx)
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


# -- each term as a conv ------------------------------------------------------------------------


def _compose(t: Term, ctx: RuleContext) -> None:
    """Compose a two-layer term into one conv (``t.spec``), or say why not (``t.reason``)."""
    a = spec_from_conv(ctx.module(t.first.target))
    module = ctx.module(t.second.target)
    if is_plain_conv(module):
        b = spec_from_conv(module)
    else:
        b = pool_spec(module, a.out_channels, a.weight)
    spec = b if isinstance(b, str) else compose_specs(a, b, t.input_pad)
    if isinstance(spec, str):
        t.reason = spec
        return
    t.spec = spec
    second = b if is_plain_conv(module) else module
    t.layers = ((a, ctx.call_shapes(t.first)), (second, ctx.call_shapes(t.second)))


def _as_spec(
    term: Term, channels: int, dims: int, groups: int, like: torch.Tensor, ctx: RuleContext
) -> ConvSpec | Refusal:
    ones = (1,) * dims
    zero_pad = tuple((0, 0) for _ in range(dims))
    if term.kind in ("conv", "chain"):
        spec = term.spec or spec_from_conv(ctx.module(term.conv_node.target))
        if term.crop is not None:
            spec = crop_as_padding(spec, term.crop)
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


def _bad_crop(term: Term, ctx: RuleContext) -> bool:
    spec = spec_from_conv(ctx.module(term.conv_node.target))
    return isinstance(crop_as_padding(spec, term.crop), Refusal)


def _tuple(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _describe(t: Term, ctx: RuleContext) -> str:
    if t.kind == "conv":
        k = "×".join(map(str, ctx.module(t.conv_node.target).kernel_size))
        base = f"conv{k}"
    elif t.kind == "chain":
        base = f"conv→{'conv' if t.conv_node is not None else 'avgpool'}"
    else:
        base = t.kind if t.kind != "affine" else t.affine.kind
    return base + ("+norm" if t.affine is not None and t.kind != "affine" else "")

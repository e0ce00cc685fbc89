r"""Any branch that is affine in an FC's input rows, summed with the FC's output, goes into
the FC's matrix: Locality Injection in any style (RepMLP, arXiv:2105.01883, Sec. 3.3;
RepMLPNet, arXiv:2112.11081).

.. math:: L\big(A(W z_r + b)\big) + g(z) = L\big((W' + M) z_r + (b' + c)\big)

``z`` is the FC's input (a ``Linear`` on ``(R, F_in)`` or a ``1×1`` conv on ``(R, F_in, 1,
1)``), ``A`` the per-channel affines after the FC (folded into ``W', b'``), ``L`` the layout
ops that bring the FC's output to the sum, and ``g`` the other summands: convs on partitions
written with ``reshape`` / ``view`` / ``permute`` / ``F.unfold`` / ``F.fold`` in any order,
channel-shared convs, pads of any mode, norms, identities. ``M, c`` come from feeding the
identity through the branch (:func:`reparam.transforms.affine_branch.branch_matrix`).

Exact because (1) every op of ``g`` is affine (a whitelist: :mod:`reparam.graph.affine_slice`;
any other op refuses), (2) every op acts on each sample (dim 0) alone and the same way for
all, and every layout op on the way is checked with an index map to keep row ``r`` of ``z``
in row ``r`` (so ``g`` has one matrix for all rows), and (3) shapes are static: every
per-row shape is fixed by ``F_in`` and by the model's constants (reshape arguments are
replayed at their example shapes; a permute's axes must be constants). Cost: ``M`` is added
to a matrix of the same shape: zero extra MACs, the branch's MACs disappear. A grouped FC
stays grouped only when ``M`` is block diagonal; otherwise it would have to become dense
(more MACs): declined unless ``allow_slower``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.fcspec import fc_like, is_fc
from reparam.graph.affine_slice import Branch, affine_branch, branch_reason, slice_module
from reparam.graph.layout_ops import compose, is_layout, node_layout
from reparam.graph.scope import ScopeView
from reparam.graph.views import AffineView, channel_affine
from reparam.patterns import AllOf, Bindings, Given, Module, Sum, Through, Where
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.transforms import dense_to_grouped_fc, fc_as_dense, fold_affine_after
from reparam.transforms.affine_branch import branch_matrix
from reparam.transforms.layout import axis_vector, broadcast_on_axis, pull_back


@dataclass
class _Chain:
    term: Node
    fc: Node
    post: list[Node]  # FC output → term: layout ops and affines (graph order)
    stops: list[Node]  # z = FC input, then its layout ancestors (z first)


def _is_fc_call(node: Node, ctx: ScopeView) -> bool:
    return node.op == "call_module" and len(node.args) == 1 and is_fc(ctx.module(node.target))


def _one_row_per_sample(fc: Node, ctx: ScopeView) -> bool:
    """an FC of one argument reading one row of features per sample: ``(R, F)`` (a Linear)
    or ``(R, F, 1, 1)`` (a 1×1 conv)"""
    # A 1×1 conv over a larger map, or a Linear on tokens, is not this rule's pattern (the
    # shape is read only for sums that hold such a layer).
    if len(fc.args) != 1:
        return False
    shape = ctx.shape(fc.args[0])
    if shape is None:
        return False
    if isinstance(ctx.module(fc.target), nn.Linear):
        return len(shape) == 2
    return len(shape) == 4 and shape[2:] == (1, 1)


def _is_post_op(node: Node, ctx: ScopeView) -> bool:
    if _is_fc_call(node, ctx):
        return False
    return isinstance(channel_affine(node, ctx.root), AffineView) or is_layout(node, ctx)


def _post_input(node: Node, ctx: ScopeView) -> object:
    view = channel_affine(node, ctx.root)
    return view.input if isinstance(view, AffineView) else node.args[0]


def _stops(fc: Node, ctx: ScopeView) -> list[Node]:
    """``z`` (the FC's input), then its layout ancestors."""
    stops, cur = [], fc.args[0]
    while isinstance(cur, Node):
        stops.append(cur)
        if not is_layout(cur, ctx):
            break
        cur = cur.args[0]
    return stops


def _summands(term: Node, b: Bindings, ctx: ScopeView) -> _Match | None:
    """The other terms of the sum: affine in the FC's input, or not (and why)."""
    chain = _Chain(term, b["fc"], list(reversed(b["post"])), _stops(b["fc"], ctx))
    stops = set(chain.stops)
    branches, others, reasons = [], [], []
    for t in b["sum"].terms:
        if t is term:
            continue
        found = affine_branch(t, stops, ctx)  # structure only: no shapes while matching
        if isinstance(found, Branch) and chain.fc not in found.nodes:
            branches.append((t, found))
        else:
            others.append(t)
            reasons.append(f"'{t.name}': {found if isinstance(found, str) else 'reads the FC'}")
    reasons = [r for r in reasons if "does not read the FC's input" not in r]
    if not (branches or reasons):
        return None
    return _Match(b["sum"].root, chain, branches, others, reasons)


#: FC(z), then per-channel affines and layout ops, each read once
_FC_BRANCH = Through(
    Where(_is_post_op, "a per-channel affine or a layout op"),
    AllOf(
        Module(is_fc, label="FC (Linear or 1×1 conv)").bind("fc"),
        Where(_one_row_per_sample, "an FC reading one row of features per sample"),
    ).single_user(),
    step=_post_input,
)


@dataclass
class _Match:
    root: Node
    chain: _Chain
    branches: list[tuple[Node, Branch]]
    others: list[Node]
    not_affine: list[str]


@dataclass
class _Plan:
    match: _Match
    module: nn.Module
    detail: str
    absmax_before: float


def _row_wise(index: Tensor, rows: int, per_row: int) -> bool:
    """Index map whose row ``r`` reads only row ``r`` of the source, the same way for all."""
    if index.dim() < 1 or index.shape[0] != rows:
        return False
    flat = index.reshape(rows, -1)
    if not bool((flat // per_row == torch.arange(rows).unsqueeze(1)).all()):
        return False
    return bool((flat % per_row == (flat % per_row)[:1]).all())


class AffineBranchIntoFc(PatternRule):
    """Replaces FC(z) + Σ affine_branch(z) with one FC whose matrix holds the branches."""

    name = "affine_branch_fc"
    summary = "branches affine in an FC's input (convs on partitions, any layout) → the FC"
    pattern = "layout(affine(FC(z))) + Σ_k g_k(layout*(z)), each g_k affine per row"
    refuses_when = (
        "shapes are unknown (pass example_inputs)",
        "no other summand is affine in the FC's input (an activation, a gate, a run-time "
        "shape argument)",
        "a layout op moves values between the FC's rows",
        "a grouped FC would become dense (more MACs; allow_slower=True to force)",
    )
    graph_pattern = Sum(
        whole=True,
        some=AllOf(
            _FC_BRANCH.bind("post"),
            Given(
                _summands,
                "a sum with another term affine in the FC's input",
                reason="no other term reads the FC's input",
                quiet=True,
            ).bind("summands"),
        ),
    ).bind("sum")
    near_miss_depth = 4  # the sum, the FC and two more steps (not every residual add)

    def check(self, b: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        m = b["summands"]
        chain = m.chain
        if not m.branches:
            return Refusal("no summand is affine in the FC's input: " + "; ".join(m.not_affine))
        fc = ctx.module(chain.fc.target)
        z_shape, y_shape = ctx.shape(chain.fc.args[0]), ctx.shape(chain.fc)
        term_shape = ctx.shape(chain.term)
        if z_shape is None or y_shape is None or term_shape is None:
            return Refusal("shapes around the FC are unknown; pass example_inputs")
        linear = isinstance(fc, nn.Linear)
        if (linear and len(z_shape) != 2) or (not linear and z_shape[2:] != (1, 1)):
            return Refusal(f"the FC reads {z_shape}: not one row of features per sample")
        rows, f_in, f_out = z_shape[0], z_shape[1], y_shape[1]
        steps = [node_layout(n, ctx) for n in [*chain.stops[:-1], *chain.post]
                 if channel_affine(n, ctx.root) is None]
        if any(step is None for step in steps):
            return Refusal("a layout op around the FC has an unknown effect")
        # post chain: fold the affines into the FC, keep the layout ops as L
        groups = 1 if linear else fc.groups
        weight, bias = fc_as_dense(fc.weight.detach(), _detached(fc.bias), groups)
        layouts = []
        for node in chain.post:
            view = channel_affine(node, ctx.root)
            if isinstance(view, AffineView):
                shape = ctx.shape(view.input)
                if shape is None or not view.fits_rank(len(shape)):
                    return Refusal("an affine after the FC acts on an unknown layout")
                pulled = []
                for p in (view.scale, view.shift):
                    full = pull_back(broadcast_on_axis(p.double(), shape, 1), compose(layouts),
                                     tuple(y_shape))
                    pulled.append(axis_vector(full, 1))
                if pulled[0] is None or pulled[1] is None:
                    return Refusal(f"'{node.name}' after the FC is not per output feature")
                weight, bias = fold_affine_after(weight, bias, *pulled)
            else:
                layouts.append(node_layout(node, ctx))
        post = compose(layouts)
        # each branch must keep the FC's rows apart; those that do not stay as summands
        z_index = torch.arange(math.prod(z_shape)).reshape(z_shape)
        kept, dropped = [], []
        for t, b in m.branches:
            reason = branch_reason(b, ctx)
            if reason:
                dropped.append((t, b, f"'{t.name}': {reason}"))
                continue
            top = max(b.entries, key=chain.stops.index)
            stops = chain.stops[: chain.stops.index(top) + 1]
            pre = compose([node_layout(n, ctx) for n in reversed(stops[:-1])])
            index: dict[Node, tuple[Tensor, int]] = {}
            nodes = sorted(set(stops[:-1]) | set(b.nodes), key=_order(chain.fc))
            reason = _rows_kept(nodes, top, z_index, pre, ctx.shape(top), rows, f_in, ctx,
                                index)
            if not reason and not _row_wise(pull_back(index[t][0], post, tuple(y_shape)), rows,
                                            index[t][1]):
                reason = f"'{t.name}' does not line up with the FC's output rows"
            (dropped if reason else kept).append((t, b, reason))
        if not kept:
            return Refusal("no summand is affine row by row in the FC's input: "
                           + "; ".join(r for *_, r in dropped) + "".join(
                               f"; {r}" for r in m.not_affine))
        m = _Match(m.root, chain, [(t, b) for t, b, _ in kept],
                   m.others + [t for t, *_ in dropped], m.not_affine)
        # one sliced graph from the topmost stop any kept branch reads
        entries = set().union(*(b.entries for _, b in m.branches))
        top = max(entries, key=chain.stops.index)
        stops = chain.stops[: chain.stops.index(top) + 1]
        pre = compose([node_layout(n, ctx) for n in reversed(stops[:-1])])
        top_shape = ctx.shape(top)
        nodes = set(stops[:-1]).union(*(b.nodes for _, b in m.branches))
        gm = copy.deepcopy(slice_module(ctx.root, top, nodes, [t for t, _ in m.branches], ctx))
        gm = gm.to(torch.float64).eval()

        def run(z: Tensor) -> Tensor:
            source = pull_back(z.reshape(z_shape), pre, top_shape)
            with torch.no_grad():
                g = gm(source)
            return pull_back(g, post, tuple(y_shape)).reshape(rows, f_out)

        try:
            matrix, offset = branch_matrix(run, rows, f_in, device=weight.device)
        except (ValueError, RuntimeError) as err:
            return Refusal(f"materialising the branches failed: {err}")
        weight, bias = weight + matrix, bias + offset
        if groups > 1:
            try:
                blocks = dense_to_grouped_fc(weight, groups)
            except ValueError:
                if not ctx.allow_slower:
                    return Refusal(
                        f"the branches connect the FC's {groups} groups: it would become "
                        f"dense ({groups}× the MACs); slower (allow_slower=True to force)"
                    )
                groups = 1
            else:
                weight = blocks.reshape(f_out, -1)
        new = fc_like(fc, weight, bias, groups)
        kinds = ", ".join(t.name for t, _ in m.branches)
        detail = (f"{len(m.branches)} affine branch(es) ({kinds}) materialised into the FC "
                  f"({f_out}×{f_in}, {rows} rows); zero extra MACs")
        old = [ctx.module(n.target).weight for _, b in m.branches for n in b.nodes
               if n.op == "call_module" and isinstance(getattr(ctx.module(n.target), "weight",
                                                               None), Tensor)]
        return _Plan(m, new, detail, absmax(fc.weight, *old))

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        m, chain, tx = plan.match, plan.match.chain, ctx.tx
        site = ctx.site_name(m.root)
        exclusive = ctx.exclusive_reason(chain.fc) is None
        near = ctx.owner_path(chain.fc)
        tx.substitute(chain.fc, plan.module, stem="reparam_fc", exclusive=exclusive, near=near)
        value = chain.term
        affines = [n for n in chain.post if isinstance(channel_affine(n, ctx.root), AffineView)]
        for node in affines:
            view = channel_affine(node, ctx.root)
            if node is value:
                value = view.input
            if node.op == "call_module" and ctx.exclusive_reason(node) is None:
                tx.place(node.target, nn.Identity())
            tx.redirect(node, view.input)
        for other in m.others:
            value = tx.insert_function(torch.add, (value, other), before=m.root)
        tx.redirect(m.root, value)
        tx.erase_unused([m.root, *affines])
        return Rewrite(self.name, site, plan.detail, 0, 0, plan.absmax_before,
                       absmax(plan.module.weight))


def _order(anchor: Node):
    order = {n: i for i, n in enumerate(anchor.graph.nodes)}
    return order.__getitem__


def _rows_kept(nodes: list[Node], top: Node, z_index: Tensor, pre, top_shape, rows: int,
               f_in: int, ctx: RuleContext, index: dict[Node, tuple[Tensor, int]]) -> str | None:
    """Follow every value of the branches as an index map into a *frame*: the FC's input
    ``z`` (``f_in`` per row) or the output of an op that works sample by sample on its dim 0.
    Every such op must read row ``r`` of its frame in its own row ``r`` (all rows alike) and
    keep ``rows`` samples, so by induction every frame's rows are the FC's rows."""
    index[top] = (pull_back(z_index, pre, top_shape), f_in)
    for node in nodes:
        layout = node_layout(node, ctx)
        src = node.args[0] if node.args else None
        if layout is not None and src in index:
            frame, per_row = index[src]
            index[node] = (layout(frame), per_row)
            continue
        for arg in node.all_input_nodes:
            if arg in index and not _row_wise(index[arg][0], rows, index[arg][1]):
                return f"'{node.name}' reads values from several of the FC's rows in one sample"
        shape = ctx.shape(node)
        if shape is None or shape[0] != rows:
            return f"'{node.name}' does not work on one sample per FC row"
        index[node] = (torch.arange(math.prod(shape)).reshape(shape), math.prod(shape) // rows)
    return None


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()

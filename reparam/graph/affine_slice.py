"""Which subgraphs are affine, row by row, in a tensor — and a graph module that runs them.

:func:`affine_branch` walks back from a node to a set of *stop* nodes (the FC's input and
its layout ancestors) and accepts only ops that are affine and act on each sample (dim 0)
alone, the same way for every sample: convs (any padding mode: reflect / replicate /
circular pads copy values), transposed convs, eval-mode batch norms, linears on rank >= 2,
average pools, pads, ``F.unfold`` / ``F.fold``, sums and differences, products with
constants that do not vary along dim 0, slices that keep dim 0, concatenation off dim 0,
sums and means off dim 0, and layout ops (checked separately with index maps). Anything
else (an activation, a product of two branch values, an op with arguments computed at run
time) makes the branch non-affine, with the reason.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from reparam.convspec import is_plain_conv
from reparam.errors import Refusal
from reparam.graph.layout_ops import is_layout, is_reshape_like, node_layout
from reparam.graph.views import channel_affine

_ADDS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_SCALES = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_NEG = {operator.neg, torch.neg}
_CONV_F = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
           F.conv_transpose3d, F.linear}
_SAMPLE_F = {F.pad, F.unfold, F.fold, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
             F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_REDUCE = {"sum", "mean"}
_MODULES = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.Identity,
)


@dataclass
class Branch:
    """The nodes of an affine branch (graph order) and the stop nodes it reads."""

    nodes: list[Node] = field(default_factory=list)
    constants: set[Node] = field(default_factory=set)
    entries: set[Node] = field(default_factory=set)


def _name(node: Node) -> str:
    return str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")


def _off_batch(dims: object, rank: int) -> bool:
    dims = (dims,) if isinstance(dims, int) else dims
    return isinstance(dims, (tuple, list)) and all(
        isinstance(d, int) and d % rank != 0 for d in dims
    )


def _const_ok(value: torch.Tensor | None, rank: int) -> bool:
    """A constant operand that is the same for every sample."""
    return value is not None and (value.dim() < rank or value.shape[0] == 1)


def _op_reason(node: Node, ctx, is_var) -> str | None:
    """None when ``node`` is affine per sample in its variable operands, else why not."""
    shape = ctx.shape(node)
    if shape is None:
        return f"'{node.name}' has no known shape"
    rank = len(shape)
    var_args = [a for a in node.all_input_nodes if is_var(a)]
    if node.op == "call_module":
        m = ctx.module(node.target)
        if (is_plain_conv(m) or isinstance(m, _MODULES)) and len(var_args) == 1:
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            view = channel_affine(node, ctx.root)
            return view.reason if isinstance(view, Refusal) else None
        if isinstance(m, nn.Linear) and rank >= 2:
            return None
        return f"module '{ctx.qualified(str(node.target))}' ({type(m).__name__}) is not affine"
    name, target = _name(node), node.target
    if (node.op == "call_function" and target in _ADDS) or name in ("add", "sub"):
        if node.kwargs.get("alpha", 1) != 1:
            return f"'{node.name}' scales by alpha"
        for a in node.args:
            if isinstance(a, Node) and not is_var(a) and not _const_ok(ctx.constant_value(a), rank):
                return f"'{node.name}' adds a tensor that varies along the batch"
        return None
    if (node.op == "call_function" and target in _SCALES) or name in ("mul", "div"):
        if len(var_args) != 1 or len(node.args) != 2 or node.kwargs:
            return f"'{node.name}' multiplies two values that depend on the input (not linear)"
        other = node.args[1] if node.args[0] is var_args[0] else node.args[0]
        if name in ("truediv", "itruediv", "div") and node.args[0] is not var_args[0]:
            return f"'{node.name}' divides by the input"
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return None
        if isinstance(other, Node) and _const_ok(ctx.constant_value(other), rank):
            return None
        return f"'{node.name}' multiplies by something that is not a per-sample constant"
    if node.op == "call_function" and target in _NEG:
        return None
    if node.op == "call_function" and target in _CONV_F:
        if len(var_args) == 1 and node.args[0] is var_args[0] and rank >= 2:
            return None
        return f"'{node.name}' convolves with weights that depend on the input"
    if node.op == "call_function" and target in _SAMPLE_F:
        if len(var_args) != 1 or node.args[0] is not var_args[0]:
            return f"'{node.name}' has run-time arguments"
        if target is F.pad:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            if not isinstance(pad, (tuple, list)) or len(pad) // 2 >= rank:
                return f"'{node.name}' pads the batch dim"
        return None
    if node.op == "call_function" and target in (F.batch_norm,):
        view = channel_affine(node, ctx.root)
        return view.reason if isinstance(view, Refusal) else None
    if node.op == "call_function" and target in (torch.cat, torch.concat):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        parts = node.args[0]
        if isinstance(dim, int) and dim % rank != 0 and all(
            isinstance(p, Node) and is_var(p) for p in parts
        ):
            return None
        return f"'{node.name}' concatenates along the batch or with constants"
    if node.op == "call_function" and target is operator.getitem:
        index = node.args[1]
        if (
            isinstance(index, tuple)
            and index
            and index[0] == slice(None)
            and all(isinstance(i, (int, slice)) or i is None for i in index)
            and all(not isinstance(getattr(i, a, None), Node) for i in index
                    for a in ("start", "stop", "step"))
        ):
            return None
        return f"'{node.name}' indexes the batch dim or with run-time indices"
    if name in _REDUCE and node.op in ("call_method", "call_function"):
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        src = ctx.shape(node.args[0])
        if src is not None and _off_batch(dims, len(src)):
            return None
        return f"'{node.name}' reduces over the batch dim"
    if node.op == "call_method" and name == "clone":
        return None
    return f"'{node.name}' ({name or node.op}) is not an affine op"


def affine_branch(term: Node, stops: set[Node], ctx) -> Branch | str:
    """The affine branch from ``stops`` to ``term``, or the reason it is none."""
    branch = Branch()
    seen: set[Node] = set()
    failure = ""
    pending = [term]
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in stops:
            branch.entries.add(node)
            continue
        if node.op in ("placeholder", "output"):
            failure = failure or f"'{node.name}' depends on another input of the scope"
            continue
        if ctx.constant_value(node) is not None:
            branch.constants.add(node)
            continue
        branch.nodes.append(node)
        if is_layout(node, ctx):
            pending.append(node.args[0])  # shape arguments are replayed from the example
        else:
            pending.extend(node.all_input_nodes)
    if not branch.entries:
        return "it does not read the FC's input"
    if failure:
        return failure
    order = {n: i for i, n in enumerate(term.graph.nodes)}
    branch.nodes.sort(key=order.__getitem__)
    return branch


def branch_reason(branch: Branch, ctx) -> str | None:
    """Why the ops of ``branch`` are not all affine per sample (shapes needed), or None."""

    def is_var(n: Node) -> bool:
        return n in branch.entries or n in branch.nodes

    for node in branch.nodes:
        if is_layout(node, ctx):
            if node_layout(node, ctx) is None:
                return f"'{node.name}' is a layout op with an unknown effect"
            continue
        if any(isinstance(a, Node) and not is_var(a) and a not in branch.constants
               for a in node.all_input_nodes):
            return f"'{node.name}' has an argument computed at run time"
        reason = _op_reason(node, ctx, is_var)
        if reason:
            return reason
    return None


def constant_closure(nodes: set[Node]) -> set[Node]:
    """``nodes`` and every node they are computed from (all constants)."""
    out: set[Node] = set()
    pending = list(nodes)
    while pending:
        n = pending.pop()
        if n not in out:
            out.add(n)
            pending.extend(n.all_input_nodes)
    return out


def slice_module(root: nn.Module, source: Node, nodes: set[Node], outputs: list[Node],
                 ctx) -> fx.GraphModule:
    """A graph module computing ``sum(outputs)`` from ``source`` (its one input), made of
    ``nodes`` and the constants they read.

    Reshape-like layout ops are replayed as reshapes to their example shapes, so their
    run-time shape arguments are not needed (the caller checked that they act per sample).
    """
    graph = fx.Graph()
    env: dict[Node, Node] = {source: graph.placeholder("source")}
    consts = {
        a
        for n in nodes
        if not is_reshape_like(n, ctx)  # replayed from the example shape: no arguments
        for a in n.all_input_nodes
        if a not in nodes and a is not source
    }
    keep = constant_closure(consts) | nodes
    for node in source.graph.nodes:
        if node not in keep or node in env:
            continue
        if node in nodes and is_reshape_like(node, ctx):
            shape = ctx.shape(node)
            env[node] = graph.call_method("reshape", (env[node.args[0]], tuple(shape)))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    total = env[outputs[0]]
    for out in outputs[1:]:
        total = graph.call_function(operator.add, (total, env[out]))
    graph.output(total)
    return fx.GraphModule(root, graph)

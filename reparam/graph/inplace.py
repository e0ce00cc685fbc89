"""In-place writes in a traced graph: make them explicit values, or say why that is unsafe.

A graph is a dataflow claim: every use of node ``x`` reads the same value. An in-place op
(``x.relu_()``, ``x += y`` captured as ``operator.iadd``, ``F.relu(x, inplace=True)``,
``nn.ReLU(inplace=True)``, slice assignment ``x[..., :1] = v``) breaks it: uses of ``x``
*after* the write read something else. Before any rule runs, each write becomes an
out-of-place op producing a new value, and the uses of ``x`` that come after the write read
that value (functionalization). Then no merge can move a read across a write.

It is unsafe — and the scope is not rewritten — when the written tensor is visible outside
the graph (an input of the forward, a parameter or buffer), or when another node may alias it
(a view such as ``reshape``/``getitem``/``permute`` of it is read after the write).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.graph.capture import CaptureError

_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_VIEW_METHODS = {
    "view",
    "reshape",
    "permute",
    "transpose",
    "expand",
    "unsqueeze",
    "squeeze",
    "flatten",
    "narrow",
    "chunk",
    "split",
    "unbind",
    "as_strided",
    "detach",
    "view_as",
    "reshape_as",
    "expand_as",
    "t",
    "movedim",
    "unflatten",
    "contiguous",
}
_VIEW_FUNCTIONS = {
    operator.getitem,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.flatten,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    torch.narrow,
    torch.unbind,
    torch.movedim,
    torch.detach,
}


def setitem_out_of_place(x: torch.Tensor, index: Any, value: Any) -> torch.Tensor:
    """``x`` with ``x[index] = value`` applied, as a new tensor (``x`` is not written)."""
    out = x.clone()
    out[index] = value
    return out


fx.wrap(setitem_out_of_place)


def _written(node: Node, root: nn.Module) -> tuple[Node, Any] | None:
    """(tensor written, out-of-place replacement target) for an in-place node, else None."""
    if node.op == "call_function":
        if node.target in _INPLACE_OPERATORS:
            return node.args[0], ("call_function", _INPLACE_OPERATORS[node.target])
        if node.target is operator.setitem:
            return node.args[0], ("call_function", setitem_out_of_place)
        if node.kwargs.get("inplace") is True and node.args:
            return node.args[0], ("call_function", node.target)
        name = getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and node.args:
            is_torch_op = getattr(torch, name, None) is node.target
            out_of_place = getattr(torch, name[:-1], None) if is_torch_op else None
            if out_of_place is not None:
                return node.args[0], ("call_function", out_of_place)
            return node.args[0], None
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and not name.startswith("_") and name not in ("requires_grad_",):
            if not hasattr(torch.Tensor, name[:-1]):
                return node.args[0], None  # zero_, fill_, copy_ ...: no method of that name
            return node.args[0], ("call_method", name[:-1])
    if node.op == "call_module":
        module = root.get_submodule(str(node.target))
        if getattr(module, "inplace", False) is True and node.args:
            return node.args[0], ("call_module", None)
    return None


def _is_view(node: Node) -> bool:
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def functionalize(graph: fx.Graph, root: nn.Module) -> int:
    """Rewrite in-place ops as out-of-place ones (see the module doc); returns how many.

    Raises :class:`CaptureError` with the reason when that would change what the forward
    computes or what it does to tensors outside the graph.
    """
    order = {n: i for i, n in enumerate(graph.nodes)}
    count = 0
    for node in list(graph.nodes):
        found = _written(node, root)
        if found is None:
            continue
        target, replacement = found
        if not isinstance(target, Node):
            continue
        if target.op in ("placeholder", "get_attr"):
            what = (
                "an input of the forward" if target.op == "placeholder" else "a parameter or buffer"
            )
            raise CaptureError(
                f"'{node.name}' writes in place into {what} ('{target.name}'); a rewritten "
                "forward could not keep that write"
            )
        later = [u for u in target.users if u is not node and order.get(u, -1) > order[node]]
        aliases = [
            u
            for u in target.users
            if u is not node and _is_view(u) and order.get(u, 0) < order[node]
        ]
        if aliases and any(a.users for a in aliases):
            raise CaptureError(
                f"'{node.name}' writes in place into '{target.name}', which '{aliases[0].name}' "
                "views: a rewrite cannot tell which reads see the write"
            )
        if not later:
            continue  # nothing reads the written tensor afterwards: the graph is still true
        if replacement is None or replacement[0] == "call_module":
            raise CaptureError(
                f"'{node.name}' writes in place into '{target.name}', which is read again "
                "afterwards; no out-of-place form of that op is known"
            )
        kind, fn = replacement
        kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        with graph.inserting_after(node):
            if kind == "call_function":
                new = graph.call_function(fn, node.args, kwargs)
            else:
                new = graph.call_method(fn, node.args, kwargs)
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        for user in later:
            user.replace_input_with(target, new)
        graph.erase_node(node)
        count += 1
        order = {n: i for i, n in enumerate(graph.nodes)}
    return count


__all__ = ["functionalize", "setitem_out_of_place"]

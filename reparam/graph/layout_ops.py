"""Layout ops in a traced graph: nodes that only move elements (permute, transpose,
reshape, view, flatten, squeeze, ...), replayable on other tensors of the same shape.

A reshape-like op is replayed as ``t.reshape(output shape)`` (all of them are row-major
reshapes), so its arguments may be computed from sizes; an axis-moving op (permute,
transpose, movedim) needs constant integer arguments. Shapes come from the example inputs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

_RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze"}
_MOVES = {"permute", "transpose", "movedim", "moveaxis", "swapaxes", "swapdims"}
_IDENTITY = {"contiguous"}
_FUNCTIONS: dict[object, str] = {
    torch.reshape: "reshape",
    torch.flatten: "flatten",
    torch.unflatten: "unflatten",
    torch.squeeze: "squeeze",
    torch.unsqueeze: "unsqueeze",
    torch.permute: "permute",
    torch.transpose: "transpose",
    torch.movedim: "movedim",
    torch.moveaxis: "moveaxis",
    torch.swapaxes: "swapaxes",
    torch.swapdims: "swapdims",
}

Layout = Callable[[Tensor], Tensor]


def _adds_axes(index: object) -> bool:
    """``x[:, :, None, None]``-style indexing: full slices, ``None`` and ``...`` only."""
    items = index if isinstance(index, tuple) else (index,)
    return any(i is None for i in items) and all(
        i is None or i is Ellipsis or i == slice(None) for i in items
    )


def _name(node: Node, module: nn.Module | None) -> str | None:
    if node.op == "call_function" and node.target in (F.unfold, F.fold):
        return "tiling"
    if node.op == "call_function" and node.target is operator.getitem:
        return "reshape" if len(node.args) == 2 and _adds_axes(node.args[1]) else None
    if node.op == "call_method":
        return str(node.target)
    if node.op == "call_function":
        return _FUNCTIONS.get(node.target)
    if node.op == "call_module" and isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    if node.op == "call_module" and isinstance(module, (nn.Unfold, nn.Fold)):
        return "tiling"
    if node.op == "call_function" and node.target in (F.unfold, F.fold):
        return "tiling"
    if node.op == "call_method" and node.target == "unfold":
        return "tiling"
    return None


def _constant_ints(args: object) -> bool:
    if isinstance(args, (tuple, list)):
        return all(_constant_ints(a) for a in args)
    return isinstance(args, int) and not isinstance(args, bool)


def _tiling(node: Node, module: nn.Module | None, in_shape, out_shape) -> Layout | None:
    """``F.unfold`` / ``F.fold`` (or ``nn.Unfold`` / ``nn.Fold``) that tile without overlap or
    gaps (same number of elements in and out) only move elements."""
    if in_shape is None or out_shape is None or math.prod(in_shape) != math.prod(out_shape):
        return None
    if module is not None:
        fn = F.unfold if isinstance(module, nn.Unfold) else F.fold
        kwargs = {k: getattr(module, k) for k in ("kernel_size", "dilation", "padding", "stride")}
        if isinstance(module, nn.Fold):
            kwargs["output_size"] = module.output_size
        args: tuple = ()
    else:
        fn, args, kwargs = node.target, tuple(node.args[1:]), dict(node.kwargs)
        if not all(_constant_ints(a) for a in (*args, *kwargs.values())):
            return None
    # index tensors go through as float64 (exact below 2**53)
    return lambda t: fn(t.to(torch.float64), *args, **kwargs).to(t.dtype)


def layout_step(node: Node, module: nn.Module | None, out_shape: tuple[int, ...] | None,
                in_shape: tuple[int, ...] | None = None):
    """A function replaying ``node`` on a tensor shaped like its input, or None when ``node``
    is not a layout op (or its effect is not known: no shape, non-constant axes)."""
    if (node.op == "call_function" and node.target in (F.unfold, F.fold)) or isinstance(
        module, (nn.Unfold, nn.Fold)
    ):
        return _tiling(node, module, in_shape, out_shape)
    if node.op == "call_method" and node.target == "unfold":  # Tensor.unfold(dim, size, step)
        rest = node.args[1:]
        same = in_shape is not None and out_shape is not None and (
            math.prod(in_shape) == math.prod(out_shape))
        if same and not node.kwargs and len(rest) == 3 and _constant_ints(rest):
            return lambda t: t.unfold(*rest)
        return None
    name = _name(node, module)
    if name is None or not node.args or not isinstance(node.args[0], Node):
        return None
    if name in _IDENTITY and len(node.args) == 1:
        return lambda t: t
    if name in _RESHAPES:
        if out_shape is None:
            return None
        shape = tuple(out_shape)
        return lambda t: t.reshape(shape)
    if name in _MOVES:
        rest = node.args[1:]
        if node.kwargs or not _constant_ints(rest):
            return None
        return lambda t: getattr(t, name)(*rest)
    return None


def compose(steps: list[Layout]) -> Layout:
    def run(t: Tensor) -> Tensor:
        for step in steps:
            t = step(t)
        return t

    return run


def node_layout(node: Node, ctx) -> Layout | None:
    """:func:`layout_step` for ``node`` in the scope of a :class:`RuleContext`."""
    if node.op not in ("call_method", "call_function", "call_module"):
        return None
    module = ctx.module(node.target) if node.op == "call_module" else None
    if _name(node, module) is None:
        return None
    src = node.args[0] if node.args else None
    return layout_step(node, module, ctx.shape(node), ctx.shape(src))


def is_reshape_like(node: Node, ctx) -> bool:
    """A layout op that :func:`layout_step` replays as a reshape to its output shape."""
    module = ctx.module(node.target) if node.op == "call_module" else None
    return _name(node, module) in _RESHAPES | {"reshape"} and node_layout(node, ctx) is not None


def is_layout(node: Node, ctx) -> bool:
    """Whether ``node`` is a layout op by its kind alone (no shapes needed, so matching stays
    cheap); :func:`node_layout` gives its replay once shapes are known."""
    if node.op not in ("call_method", "call_function", "call_module"):
        return False
    module = ctx.module(node.target) if node.op == "call_module" else None
    name = _name(node, module)
    if name is None or not node.args or not isinstance(node.args[0], Node):
        return False
    if name in _MOVES:
        return not node.kwargs and _constant_ints(node.args[1:])
    return name in _RESHAPES or name in _IDENTITY or name in ("tiling", "unfold")

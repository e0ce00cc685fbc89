"""See a crop of the spatial dims, however it is written: ``x[:, :, a:-b, c:-d]``,
``x[..., c:-d]``, or ``F.pad(x, [-c, -d, ...])`` (a negative constant pad).

:func:`crop_of` reads a crop given the rank of its shape, :func:`read_crop` with the shape
recorded on the graph, and :data:`CROP` is that reading as a pattern (a conv on a crop is
``Module(is_plain_conv, CROP.bind("crop"))``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch.nn.functional as F
from torch.fx import Node

from reparam.patterns import Given

Crop = tuple[tuple[int, int], ...]  # per spatial dim, (removed at start, removed at end)


def _slice_amounts(s: object) -> tuple[int, int] | None:
    if not isinstance(s, slice) or s.step not in (None, 1):
        return None
    start, stop = s.start, s.stop
    if start is None:
        start = 0
    if not isinstance(start, int) or start < 0:
        return None
    if stop is None:
        end = 0
    elif isinstance(stop, int) and stop < 0:
        end = -stop
    else:
        # a stop counted from the start crops ``extent - stop`` at this size only: at another
        # size the crop differs, and a conv with fixed padding would not follow it
        return None
    return start, end


def crop_of(node: Node, shape: tuple[int, ...] | None) -> tuple[Node, Crop] | None:
    """``(input, crop)`` when ``node`` crops only the spatial dims of a ``(N, C, *S)`` input
    whose shape is ``shape``. Only crops whose amounts are the same at every input size are
    read: starts from the start, stops negative or open."""
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], Node):
        return None
    if shape is None or len(shape) < 3:
        return None
    dims = len(shape) - 2
    if node.target is operator.getitem:
        index = node.args[1]
        if not isinstance(index, tuple):
            return None
        items = list(index)
        if items and items[0] is Ellipsis:
            items = [slice(None)] * (len(shape) - len(items) + 1) + items[1:]
        if len(items) > len(shape) or any(i is Ellipsis for i in items):
            return None
        items += [slice(None)] * (len(shape) - len(items))
        if any(i != slice(None) for i in items[:2]):
            return None
        crop = []
        for d in range(dims):
            amounts = _slice_amounts(items[2 + d])
            if amounts is None:
                return None
            crop.append(amounts)
    elif node.target is F.pad:
        pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        if mode != "constant" or not isinstance(pads, (list, tuple)):
            return None
        if not all(isinstance(p, int) and p <= 0 for p in pads) or len(pads) % 2:
            return None
        if len(pads) > 2 * dims:
            return None
        crop = [(0, 0)] * dims
        for i in range(len(pads) // 2):  # F.pad lists the last dim first
            crop[dims - 1 - i] = (-pads[2 * i], -pads[2 * i + 1])
    else:
        return None
    if not any(a or b for a, b in crop):
        return None
    return node.args[0], tuple(crop)


def read_crop(node: object, view: Any) -> tuple[Node, Crop] | None:
    """:func:`crop_of` ``node`` against the shape recorded for it (``view.shape``, a
    :class:`~reparam.graph.scope.ScopeView`; only its rank is read, which a crop keeps); None
    when ``node`` is no crop or that shape is unknown."""
    if not isinstance(node, Node):
        return None
    return crop_of(node, view.shape(node))


CROP = Given(lambda node, _, view: read_crop(node, view), "a crop of the spatial dims")
"""A crop of the spatial dims (:func:`read_crop`); binds ``(input, crop)``."""

"""Tensor shapes on graph nodes, from running the scope on example inputs.

Shape propagation uses ``FakeTensorProp`` (no real compute) and falls back to a real run
(``ShapeProp``) where fake tensors are not supported. Rules that need shapes (a norm's rank,
the partitions of RepMLP) refuse with a reason when none are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node


def propagate_shapes(root: nn.Module, graph: fx.Graph, inputs: Sequence[Any]) -> bool:
    """Annotate ``graph``'s nodes with ``meta['shape']``; False if it could not be done."""
    gm = fx.GraphModule(root, graph)
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.passes.fake_tensor_prop import FakeTensorProp

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fake_inputs = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in inputs]
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*fake_inputs)
        key = "val"
    except Exception:  # noqa: BLE001 - any failure: fall back to a real run
        from torch.fx.passes.shape_prop import ShapeProp

        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(*inputs)
        except Exception:  # noqa: BLE001
            return False
        key = "tensor_meta"
    for node in graph.nodes:
        value = node.meta.get(key)
        shape = getattr(value, "shape", None)
        if shape is not None:
            node.meta["shape"] = tuple(int(s) for s in shape)
    return True


def shape_of(node: Any) -> tuple[int, ...] | None:
    if isinstance(node, Node):
        return node.meta.get("shape")
    return None


def rank_of(node: Any) -> int | None:
    shape = shape_of(node)
    return None if shape is None else len(shape)


def copy_shape(src: Node, dst: Node) -> None:
    if "shape" in src.meta:
        dst.meta["shape"] = src.meta["shape"]

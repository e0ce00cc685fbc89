"""Tensor shapes on graph nodes, from running the scope on example inputs.

Shapes come from running the scope on the inputs it received during one forward of the
whole model on the example inputs, lazily: only when a rule asks. Rules that need shapes
(a norm's rank, the partitions of RepMLP) refuse with a reason when none are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node


def propagate_shapes(
    root: nn.Module, graph: fx.Graph, inputs: Sequence[Any], key: str = "shape"
) -> bool:
    """Annotate ``graph``'s nodes with ``meta[key]`` (their shapes) by running it on
    ``inputs``; False if that fails.

    A real run (``ShapeProp``), not fake tensors: user modules may cache tensors computed in
    their forward (timm's LeViT caches attention biases in eval mode), and a fake tensor left
    in such a cache would poison the model.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    owner = graph.owning_module
    gm = fx.GraphModule(root, graph)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception:  # noqa: BLE001 - no shapes: rules that need them refuse with a reason
        return False
    finally:
        # GraphModule(root, graph) makes the throwaway gm the graph's owner; a rule that then
        # adds a module under the scope and calls it would be checked against gm and fail
        graph.owning_module = owner
    for node in graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        if shape is not None:
            node.meta[key] = tuple(int(s) for s in shape)
    return True


def shape_of(node: Any) -> tuple[int, ...] | None:
    if isinstance(node, Node):
        return node.meta.get("shape")
    return None


def rank_of(node: Any) -> int | None:
    shape = shape_of(node)
    return None if shape is None else len(shape)

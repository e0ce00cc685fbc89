"""Capture a module's forward as a torch.fx graph, with a leaf-module policy.

Leaves are the built-in ``torch.nn`` layers whose ``forward`` is the library's own (convs,
linears, norms, pools, activations ...). A subclass that overrides ``forward`` (timm's
``BatchNormAct2d``, say) is traced through, so the engine sees what it computes. Containers
(``Sequential``, ``ModuleList``, ``ModuleDict``) and user modules are always traced through.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def _defining_class(cls: type, attr: str) -> type | None:
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            return klass
    return None


def is_builtin_leaf(module: nn.Module) -> bool:
    """True for a built-in torch.nn layer that computes exactly what its library class says."""
    if isinstance(module, _CONTAINERS) or type(module) is nn.Module:
        return False
    owner = _defining_class(type(module), "forward")
    return owner is not None and owner.__module__.startswith("torch.nn.")


class LeafPolicyTracer(fx.Tracer):
    """fx tracer whose leaves are built-in layers plus user-named module types."""

    def __init__(self, extra_leaf_types: Iterable[type] = ()) -> None:
        super().__init__()
        self.extra_leaf_types = tuple(extra_leaf_types)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.extra_leaf_types and isinstance(m, self.extra_leaf_types):
            return True
        return is_builtin_leaf(m)


@dataclass
class Capture:
    """A traced graph of ``root`` (graph nodes refer to ``root``'s submodules by path)."""

    root: nn.Module
    graph: fx.Graph
    constants: dict[str, torch.Tensor] = field(default_factory=dict)


_MODULE_INTERNALS = frozenset(nn.Module().__dict__)


def _snapshot(module: nn.Module) -> list[tuple[nn.Module, dict[str, object]]]:
    saved = []
    for m in module.modules():
        state = {}
        for key, value in m.__dict__.items():
            if key in _MODULE_INTERNALS:
                continue
            state[key] = copy.copy(value) if isinstance(value, (dict, list, set)) else value
        saved.append((m, state))
    return saved


def _restore(saved: list[tuple[nn.Module, dict[str, object]]]) -> None:
    for m, state in saved:
        for key in [k for k in m.__dict__ if k not in _MODULE_INTERNALS and k not in state]:
            del m.__dict__[key]
        m.__dict__.update(state)


def capture(module: nn.Module, extra_leaf_types: Iterable[type] = ()) -> Capture:
    """Trace ``module``; raises whatever torch.fx raises when the forward is not traceable.

    Tracing runs the user's forward on proxies, and some forwards cache what they compute
    (timm's LeViT stores attention biases keyed by device): every module's plain attributes
    are restored afterwards, so no proxy is left behind in the model. Tensor constants that
    the tracer attached to the root are returned in ``constants`` instead.
    """
    saved = _snapshot(module)
    before = set(module.__dict__)
    try:
        graph = LeafPolicyTracer(extra_leaf_types).trace(module)
        # tensors the forward makes from constants become attributes of the root
        constants = {
            k: v
            for k, v in module.__dict__.items()
            if k not in before and isinstance(v, torch.Tensor)
        }
    finally:
        _restore(saved)
    return Capture(root=module, graph=graph, constants=constants)


def describe_trace_failure(exc: BaseException) -> str:
    """One line saying why tracing failed (data-dependent control flow, unpacked shapes ...)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "iterated" in first or "__iter__" in first:
        hint = " (the forward unpacks a traced tensor or its size)"
    elif "bool" in first or "control flow" in first:
        hint = " (data-dependent control flow)"
    else:
        hint = ""
    return f"{type(exc).__name__}: {first}{hint}"

"""A read-only view of one scope being deployed: what rules read about its graph and modules.

The trust model lives here: :meth:`ScopeView.module` returns a layer the trust model does not
vouch for (hooks, overridden internals) as an :class:`OpaqueModule`, which no rule folds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.cost import AtShapes
from reparam.graph.trust import untrusted_reason
from reparam.graph.views import resolve_attr


class OpaqueModule(nn.Module):
    """Stands for a module that must be called as it is: matches no rule's pattern."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.reason = untrusted_reason(module) or "is opaque"
        self.wrapped_type = type(module).__name__
        self.wrapped_class = type(module)


def _is_deployed(module: nn.Module) -> bool:
    return "_reparam_graph" in module.__dict__


class ScopeView:
    """A read-only view of one scope: its traced graph, the module whose forward it is, and
    what rules ask about them (trusted module lookup, exclusivity, shapes, constant values,
    site names). Edits go through a :class:`reparam.transaction.Transaction`."""

    def __init__(
        self,
        root: nn.Module,
        graph: fx.Graph,
        scope_path: str = "",
        shared_modules: frozenset[int] = frozenset(),
        allow_slower: bool = False,
    ) -> None:
        self.root = root
        self.graph = graph
        self.scope_path = scope_path
        self.shared_modules = shared_modules
        self.allow_slower = allow_slower
        self.pinned: dict[str, str] = {}  # path -> who else uses it (outside this graph)
        self._call_counts: dict[str, int] | None = None
        self.shape_provider: Callable[[fx.Graph], bool] | None = None
        # one per other input shape the scope is called at: annotates meta[key]
        self.other_shape_providers: list[Callable[[fx.Graph, str], bool]] = []
        self._version = 0
        self._shapes_version = -1
        self._other_shapes_version = -1

    def module(self, target: str) -> nn.Module:
        """The module at ``target``; a layer the trust model does not vouch for (hooks,
        overridden internals) is returned as :class:`OpaqueModule`, which no rule folds."""
        module = self.root.get_submodule(target)
        if untrusted_reason(module) is not None and not _is_deployed(module):
            return OpaqueModule(module)
        return module

    def call_count(self, target: str) -> int:
        if self._call_counts is None:
            counts: dict[str, int] = {}
            for node in self.graph.nodes:
                if node.op == "call_module":
                    counts[node.target] = counts.get(node.target, 0) + 1
            self._call_counts = counts
        return self._call_counts.get(target, 0)

    def exclusive_reason(self, node: Node) -> str | None:
        """Why the module that ``node`` calls may not be changed for this site alone."""
        if node.op != "call_module":
            return None
        for path, reason in self.pinned.items():
            if node.target == path or str(node.target).startswith(path + "."):
                return reason
        module = self.module(node.target)
        if isinstance(module, OpaqueModule):
            return f"module '{self.qualified(node.target)}' {module.reason}"
        if id(module) in self.shared_modules:
            return f"module '{self.qualified(node.target)}' is shared (reachable by two paths)"
        if self.call_count(node.target) > 1:
            return f"module '{self.qualified(node.target)}' is called more than once"
        for p in module.parameters():
            if id(p) in self.shared_modules:
                return f"module '{self.qualified(node.target)}' shares a parameter with another"
        prefix = f"{node.target}."
        for other in self.graph.nodes:
            if other.op == "get_attr" and str(other.target).startswith(prefix):
                return f"the forward also reads '{self.qualified(str(other.target))}' directly"
        return None

    def shape(self, node: object) -> tuple[int, ...] | None:
        """The shape of ``node``'s value on the example inputs (None when unknown).

        Shapes are propagated lazily, once per version of the graph, and only for scopes
        where a rule asks for one.
        """
        if not isinstance(node, Node):
            return None
        if "shape" not in node.meta and self.shape_provider is not None:
            if self._shapes_version != self._version:
                self._shapes_version = self._version
                self.shape_provider(self.graph)
        return node.meta.get("shape")

    def shape_keys(self) -> list[str]:
        """The ``node.meta`` keys of the recorded calls' shapes, in :meth:`call_shapes` order."""
        return ["shape", *(f"shape@{i}" for i in range(len(self.other_shape_providers)))]

    def call_shapes(self, node: object) -> AtShapes | None:
        """The shapes of ``node``'s value at every call of the scope in the recorded forward
        (the first call's, then one per other input shape), for cost decisions that must hold
        for every call; None when any is unknown."""
        first = self.shape(node)
        if first is None or not isinstance(node, Node):
            return None
        keys = self.shape_keys()[1:]
        if any(k not in node.meta for k in keys):
            if self._other_shapes_version != self._version:
                self._other_shapes_version = self._version
                for key, provider in zip(keys, self.other_shape_providers, strict=True):
                    provider(self.graph, key)
        others = [node.meta.get(k) for k in keys]
        if any(s is None for s in others):
            return None
        return AtShapes((first, *others))

    def constant_value(self, node: object) -> torch.Tensor | None:
        """The value of ``node`` when it depends only on the model's parameters, buffers and
        constants (not on the inputs), evaluated on demand; None otherwise (or when it is not
        a tensor). Intermediate non-tensor values (a parameter's ``.shape``) may take part."""
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return torch.tensor(node)
        value = self._constant(node)
        return value if isinstance(value, torch.Tensor) else None

    _NOT_CONSTANT = object()

    def _constant(self, node: object) -> object:
        if not isinstance(node, Node):
            return node
        cache = self.__dict__.setdefault("_constants", {})
        if node in cache:
            return cache[node]
        value = self._NOT_CONSTANT
        if node.op == "get_attr":
            obj = resolve_attr(self.root, str(node.target))
            if isinstance(obj, torch.Tensor):
                value = obj.detach()
        elif node.op in ("call_function", "call_method"):
            ok = True

            def arg(a):
                nonlocal ok
                if isinstance(a, Node):
                    v = self._constant(a)
                    ok = ok and v is not self._NOT_CONSTANT
                    return v
                return a

            args = fx.node.map_aggregate(node.args, arg)
            kwargs = fx.node.map_aggregate(node.kwargs, arg)
            if ok:
                try:
                    with torch.no_grad():
                        if node.op == "call_function":
                            value = node.target(*args, **kwargs)
                        else:
                            value = getattr(args[0], node.target)(*args[1:], **kwargs)
                except Exception:  # noqa: BLE001 - not evaluable: not a constant
                    value = self._NOT_CONSTANT
        cache[node] = value
        return value

    def rank(self, node: object) -> int | None:
        shape = self.shape(node)
        return None if shape is None else len(shape)

    def qualified(self, target: str) -> str:
        return f"{self.scope_path}.{target}" if self.scope_path else str(target)

    def site_name(self, node: Node) -> str:
        if node.op == "call_module":
            return self.qualified(str(node.target))
        stack = node.meta.get("nn_module_stack")
        owner = ""
        if stack:
            owner = list(stack.values())[-1][0]
        where = self.qualified(owner) if owner else (self.scope_path or "<model>")
        return f"{where}:{node.name}"

    def owner_path(self, node: Node) -> str:
        """Path (relative to the scope) of the module whose forward created ``node``."""
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        if node.op == "call_module":
            path = path.rpartition(".")[0] if path == node.target else path
        return path

    def invalidate(self) -> None:
        """Forget what was derived from the graph and the modules (after an edit)."""
        self._call_counts = None
        self.__dict__.pop("_constants", None)
        self._version += 1

    def exists(self, path: str) -> bool:
        try:
            self.root.get_submodule(path)
            return True
        except AttributeError:
            return False

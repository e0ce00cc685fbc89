"""What a merge rule is: pattern + check + rewrite, and the context rules work in.

A rule never touches the user's model directly: it reads the traced graph of one *scope* (a
module whose forward was traced) through a :class:`RuleContext`, and edits the graph and the
scope's submodules only through it, so the engine can report, verify and roll back each rewrite.

* ``match(node, ctx)``: the pattern. ``None`` when ``node`` is not this rule's shape at all.
* ``check(match, ctx)``: exactness (and cost) conditions. Returns a plan, or a
  :class:`~reparam.errors.Refusal` saying why not; the maths runs here, in pure tensor functions
  from :mod:`reparam.transforms`.
* ``rewrite(plan, ctx)``: the graph surgery. Returns a :class:`Rewrite` record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.graph.trust import untrusted_reason


class OpaqueModule(nn.Module):
    """Stands for a module that must be called as it is: matches no rule's pattern."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.reason = untrusted_reason(module) or "is opaque"
        self.wrapped_type = type(module).__name__


def _is_deployed(module: nn.Module) -> bool:
    return "_reparam_graph" in module.__dict__


@dataclass
class Rewrite:
    """What one firing of a rule did."""

    rule: str
    site: str
    detail: str
    macs_before: int = 0
    macs_after: int = 0
    weight_absmax_before: float = 0.0
    weight_absmax_after: float = 0.0
    forward_changed: bool = True


class RuleContext:
    """The scope a rule works in: the traced graph and the module whose forward it is."""

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
        self.replaced: dict[str, nn.Module | None] = {}
        self.created: set[str] = set()  # paths rules put modules at (dead ones get deleted)
        self._call_counts: dict[str, int] | None = None
        self.shape_provider: Callable[[fx.Graph], bool] | None = None
        self._version = 0
        self._shapes_version = -1

    # -- reading -----------------------------------------------------------------------------
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
            from reparam.graph.views import resolve_attr

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

    # -- editing -----------------------------------------------------------------------------
    def invalidate(self) -> None:
        self._call_counts = None
        self.__dict__.pop("_constants", None)
        self._version += 1

    def set_module(self, path: str, module: nn.Module | None) -> None:
        """Put ``module`` at ``path`` under the scope (None deletes it), remembering the old."""
        parent_path, _, name = path.rpartition(".")
        parent = self.root.get_submodule(parent_path) if parent_path else self.root
        if path not in self.replaced:
            self.replaced[path] = getattr(parent, name, None)
        if module is None:
            if name in parent._modules:
                del parent._modules[name]
        else:
            module.train(self.root.training)
            setattr(parent, name, module)
            self.created.add(path)
        self.invalidate()

    def fresh_path(self, near: str, stem: str) -> str:
        """An unused submodule path next to ``near`` (a path of the scope, may be '')."""
        prefix = f"{near}." if near else ""
        base = f"{prefix}{stem}"
        candidate, i = base, 1
        while self._exists(candidate):
            candidate = f"{base}_{i}"
            i += 1
        return candidate

    def _exists(self, path: str) -> bool:
        try:
            self.root.get_submodule(path)
            return True
        except AttributeError:
            return False

    def call(self, path: str, args: tuple[Any, ...], before: Node) -> Node:
        with self.graph.inserting_before(before):
            node = self.graph.call_module(path, args)
        node.meta.update(before.meta)
        self.invalidate()
        return node

    def _fold_rank_read(self, user: Node, node: Node) -> None:
        """Replace ``node.ndim`` / ``node.dim()`` (an assert's check, say) by the constant rank,
        so that reading the rank does not keep a merged-away node alive."""
        is_ndim = (user.op == "call_function" and user.args[1:2] == ("ndim",)) or (
            user.op == "call_method" and user.target == "dim" and len(user.args) == 1
        )
        if not is_ndim:
            return
        rank = self.rank(node) if "shape" in node.meta else None
        if rank is None and node.op == "call_module":
            weight = getattr(self.module(node.target), "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() >= 3:
                rank = weight.dim()
        if rank is None:
            return
        for consumer in list(user.users):
            consumer.args = fx.node.map_arg(consumer.args, lambda n: rank if n is user else n)
            consumer.kwargs = fx.node.map_arg(consumer.kwargs, lambda n: rank if n is user else n)
        self.graph.erase_node(user)

    def erase_unused(self, nodes: Iterable[Node], same_shape_as: Node | None = None) -> None:
        """Erase ``nodes`` (and anything that only fed them) once nothing uses them.

        Reads of their rank (``x.ndim`` in an assert) become constants first; other metadata
        reads keep a node alive (still correct: merged modules keep their output shapes).
        """
        from reparam.graph.views import is_metadata_use

        pending = list(nodes)
        while pending:
            node = pending.pop()
            if node.graph is not self.graph or node.op in ("placeholder", "output"):
                continue
            if getattr(node, "_erased", False):
                continue
            for user in list(node.users):
                if is_metadata_use(user, node):
                    self._fold_rank_read(user, node)
            if node.users:
                continue
            inputs = list(node.all_input_nodes)
            self.graph.erase_node(node)
            pending.extend(inputs)
        self.invalidate()


class Rule(ABC):
    """A merge rule. Subclasses set the class attributes and implement the three steps."""

    name: ClassVar[str]
    summary: ClassVar[str]
    pattern: ClassVar[str]
    refuses_when: ClassVar[tuple[str, ...]] = ()

    def candidates(self, graph: fx.Graph) -> Iterable[Node]:
        return list(graph.nodes)

    @abstractmethod
    def match(self, node: Node, ctx: RuleContext) -> Any | None: ...

    @abstractmethod
    def check(self, match: Any, ctx: RuleContext) -> Any: ...

    @abstractmethod
    def rewrite(self, plan: Any, ctx: RuleContext) -> Rewrite: ...

    @property
    def maths(self) -> str:
        import inspect
        import sys

        module = sys.modules[type(self).__module__]
        return inspect.cleandoc(module.__doc__ or "")

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


@dataclass
class SiteOutcome:
    """What one rule said at one site: fired, or refused with a reason."""

    rule: str
    site: str
    fired: bool
    reason: str = ""


def absmax(*tensors: torch.Tensor | None) -> float:
    values = [float(t.detach().abs().max()) for t in tensors if t is not None and t.numel()]
    return max(values, default=0.0)

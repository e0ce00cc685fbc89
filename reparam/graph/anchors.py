"""Anchor keys: which nodes a pattern can start at, so that the driver looks rules up by key.

A node's key is ``(op, name)``: ``("call_function", "add")`` for ``operator.add`` and
``torch.add`` alike (a function's ``__name__``), ``("call_method", "add")`` for ``x.add(y)``,
and ``(op, "")`` for a module call, a placeholder, an attribute read or the output (a module
call is told apart by its module, which the pattern's ``may_anchor`` looks at).

A pattern's :meth:`~reparam.patterns.Pattern.anchor_keys` is a set of keys that holds the key
of every node its ``may_anchor`` accepts (``None``: any node may be an anchor). Keys are a
coarse filter, sound by construction: a function is keyed by its name, so a pattern keyed on
``torch.add`` is also offered ``my_module.add``, which its own test then turns down.

:class:`AnchorIndex` groups one graph version's nodes by key, in graph order; the driver asks
it for a rule's candidates instead of walking every node for every rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch.fx as fx
from torch.fx import Node

Key = tuple[str, str]
#: a pattern's anchor keys; ``None`` is "any node"
AnchorKeys = frozenset[Key] | None

MODULE_CALL: Key = ("call_module", "")


def function_name(target: object) -> str:
    """The name a ``call_function`` target is keyed (and matched by name) under."""
    return getattr(target, "__name__", "")


def node_key(node: Node) -> Key:
    """The key of ``node``: its op, and the function or method name it calls."""
    if node.op == "call_function":
        return ("call_function", function_name(node.target))
    if node.op == "call_method":
        return ("call_method", str(node.target))
    return (node.op, "")


def function_keys(
    functions: Iterable[Callable] = (), names: Iterable[str] = (), methods: Iterable[str] = ()
) -> frozenset[Key]:
    """Keys of calls of ``functions`` (by identity), of functions *or* methods called ``names``,
    and of ``methods``."""
    keys = {("call_function", function_name(f)) for f in functions}
    for name in names:
        keys.update({("call_function", name), ("call_method", name)})
    keys.update(("call_method", m) for m in methods)
    return frozenset(keys)


def union(keys: Iterable[AnchorKeys]) -> AnchorKeys:
    """Anchors of "any of": None when any part may anchor anywhere."""
    result: set[Key] = set()
    for part in keys:
        if part is None:
            return None
        result |= part
    return frozenset(result)


def intersection(keys: Iterable[AnchorKeys]) -> AnchorKeys:
    """Anchors of "all of": the parts that say something, intersected (None if none does)."""
    result: frozenset[Key] | None = None
    for part in keys:
        if part is not None:
            result = part if result is None else result & part
    return result


class AnchorIndex:
    """One graph version's nodes grouped by :func:`node_key`, in graph order."""

    def __init__(self, graph: fx.Graph) -> None:
        self.nodes = list(graph.nodes)
        self._by_key: dict[Key, list[Node]] = defaultdict(list)
        for node in self.nodes:
            self._by_key[node_key(node)].append(node)
        self._position = {node: i for i, node in enumerate(self.nodes)}
        self._cache: dict[AnchorKeys, list[Node]] = {}

    def candidates(self, keys: AnchorKeys) -> list[Node]:
        """The nodes whose key is in ``keys`` (every node for None), in graph order."""
        if keys is None:
            return self.nodes
        found = self._cache.get(keys)
        if found is None:
            groups = [self._by_key[k] for k in keys if k in self._by_key]
            if len(groups) == 1:
                found = groups[0]
            else:
                found = sorted((n for g in groups for n in g), key=self._position.__getitem__)
            self._cache[keys] = found
        return found


__all__ = [
    "MODULE_CALL",
    "AnchorIndex",
    "AnchorKeys",
    "function_keys",
    "function_name",
    "intersection",
    "node_key",
    "union",
]

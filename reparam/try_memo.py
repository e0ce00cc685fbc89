"""The driver's memory of rule tries that did not fire, kept until the graph changes near them.

A scope's rules are applied in a fixed order (rule priority, then graph order) until none
fires; after each rewrite the driver looks for the first firing again from the start. Without
a memory that is every (rule, node) try again after every rewrite: quadratic in a scope with
many rewrites. A try that did not fire (no match, or a refusal) is remembered with the nodes
it depended on: the nodes its pattern looked at (:func:`reparam.matcher.recording_visits`)
and their inputs and users. After a rewrite, every node whose *signature* changed (its
target, arguments, users, or the module or attribute its target names), was erased or is new
invalidates the tries that depended on it; the rest are skipped, because trying them again
would give the same answer. So the driver fires exactly the rewrites, in exactly the order,
that trying everything again would.

Only :class:`~reparam.rules.base.PatternRule` tries are remembered (a hand-written ``match``
reports no visited nodes). A pattern rule is only offered the nodes its pattern's anchor keys
name (:class:`~reparam.graph.anchors.AnchorIndex`, one per graph version: a rule anchored at a
conv never looks at an add), and its anchor test (``may_anchor``, a look at one node) is asked
once per node version. A memory that missed a dependency could only skip a
rewrite, never make one: every rewrite still goes through its full match and check. The test
suite runs with ``REPARAM_CHECK_MEMO=1``, which tries every remembered pair and asks every
remembered anchor test again, and fails loudly if an answer differs.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.graph.anchors import AnchorIndex
from reparam.graph.views import resolve_attr

Key = tuple[int, Node]  # (rule index, anchor node)


def checking() -> bool:
    """Whether remembered tries are run again and compared (``REPARAM_CHECK_MEMO=1``)."""
    return os.environ.get("REPARAM_CHECK_MEMO", "") not in ("", "0")


class StaleMemoError(AssertionError):
    """A remembered try fired when tried again: the memo missed a dependency (a bug)."""


def _signature(node: Node, root: nn.Module) -> tuple:
    """What a try can read of ``node``: the objects themselves (compared by identity)."""
    held: object = None
    if node.op in ("call_module", "get_attr"):
        try:
            held = resolve_attr(root, str(node.target))
        except AttributeError:
            held = None
    return (node.target, node.args, node.kwargs, tuple(node.users), held)


def _same(a: tuple, b: tuple) -> bool:
    return (
        a[0] == b[0]
        and a[1] is b[1]
        and a[2] is b[2]
        and len(a[3]) == len(b[3])
        and all(x is y for x, y in zip(a[3], b[3], strict=True))
        and a[4] is b[4]
    )


class TryMemo:
    """Tries that did not fire, each with the nodes it depended on."""

    def __init__(self, graph: fx.Graph, root: nn.Module) -> None:
        self.graph, self.root = graph, root
        self._deps: dict[Key, frozenset[Node]] = {}
        self._by_dep: dict[Node, set[Key]] = defaultdict(set)
        self.index = AnchorIndex(graph)
        self._signatures = {n: _signature(n, root) for n in self.index.nodes}
        self._anchors: dict[Node, dict[Any, bool]] = defaultdict(dict)
        self._keys: dict[int, Any] = {}
        self.check = checking()

    def candidates(self, index: int, pattern: Any) -> list[Node]:
        """The nodes rule ``index`` (its pattern ``pattern``; None for a hand-written match)
        may anchor at, in graph order: those its pattern's anchor keys name and whose anchor
        test passes. In checking mode, every other node is asked too, and one that the
        keys left out but the test accepts is an error."""
        if pattern is None:
            return self.index.nodes
        keys = self._keys.get(index)
        if keys is None and index not in self._keys:
            keys = self._keys[index] = pattern.anchor_keys()
        offered = self.index.candidates(keys)
        if self.check and keys is not None:
            chosen = set(offered)
            for node in self.index.nodes:
                if node not in chosen and pattern.may_anchor(node, self.root):
                    raise StaleMemoError(
                        f"{pattern!r} may anchor at '{node.name}', which its anchor keys "
                        f"{sorted(keys)} leave out"
                    )
        return [n for n in offered if self.may_anchor(index, pattern, n)]

    def left_out(self, index: int, pattern: Any) -> list[Node]:
        """The nodes rule ``index``'s anchor keys leave out, each once per node version (for
        checking mode: the driver matches the rule there and fails if anything turns up)."""
        keys = self._keys.get(index)
        if keys is None:
            return []
        chosen = set(self.index.candidates(keys))
        found = []
        for node in self.index.nodes:
            seen = self._anchors[node]
            if node not in chosen and ("left out", index) not in seen:
                seen[("left out", index)] = True  # type: ignore[index]
                found.append(node)
        return found

    def may_anchor(self, index: int, pattern: Any, node: Node) -> bool:
        """``pattern.may_anchor`` at ``node`` for rule ``index``, asked once per node version."""
        seen = self._anchors[node]
        answer = seen.get(index)
        if answer is None:
            answer = seen[index] = bool(pattern.may_anchor(node, self.root))
        elif self.check and answer != bool(pattern.may_anchor(node, self.root)):
            raise StaleMemoError(
                f"{pattern!r}.may_anchor changed at '{node.name}' though the node did not"
            )
        return answer

    def knows(self, key: Key) -> bool:
        """Whether ``key`` did not fire and nothing it depended on changed since."""
        return key in self._deps

    def remember(self, key: Key, visited: Iterable[Node]) -> None:
        """``key`` did not fire; it looked at ``visited`` (and reads their neighbours)."""
        deps: set[Node] = {key[1]}
        for node in visited:
            deps.add(node)
            deps.update(node.all_input_nodes)
            deps.update(node.users)
        frozen = frozenset(deps)
        self._deps[key] = frozen
        for node in frozen:
            self._by_dep[node].add(key)

    def forget_all(self) -> None:
        self._deps.clear()
        self._by_dep.clear()
        self._anchors.clear()

    def graph_changed(self, graph: fx.Graph | None = None) -> None:
        """After a rewrite (or a rollback, which may swap in another graph): forget the tries
        that depended on a node that changed, was erased or is new."""
        if graph is not None and graph is not self.graph:
            self.graph = graph
            self.forget_all()
        self.index = AnchorIndex(self.graph)
        current = {n: _signature(n, self.root) for n in self.index.nodes}
        changed = [n for n in self._signatures if n not in current]
        for node, sig in current.items():
            old = self._signatures.get(node)
            if old is None or not _same(old, sig):
                changed.append(node)
        self._signatures = current
        for node in changed:
            self._anchors.pop(node, None)
            for key in self._by_dep.pop(node, ()):
                deps = self._deps.pop(key, None)
                if deps is None:
                    continue
                for dep in deps:
                    if dep is not node:
                        self._by_dep.get(dep, set()).discard(key)

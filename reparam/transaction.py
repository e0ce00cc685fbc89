"""One rewrite's edits to a scope, applied through one object that commits or rolls back.

A rule's ``rewrite`` edits the scope only through a :class:`Transaction` (``ctx.tx``): it
places modules (at the same path, or a fresh path next to a site), redirects uses of a node,
inserts calls and erases what became dead. The transaction records every module it replaced,
so :meth:`Transaction.rollback` puts them back and restores the graph as it was when the
transaction began; the driver rolls back a rewrite that verification finds inexact.

The one place in the engine where submodules are set and deleted is here
(:func:`set_submodule`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.errors import ReparamError
from reparam.graph.scope import ScopeView
from reparam.graph.views import is_metadata_use


def set_submodule(root: nn.Module, path: str, module: nn.Module | None) -> None:
    """Put ``module`` at ``path`` under ``root`` (None deletes what is there)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if module is None:
        if name in parent._modules:
            delattr(parent, name)
    else:
        setattr(parent, name, module)


class Transaction:
    """The edits of one rewrite of ``view``'s scope.

    ``created`` is the scope's set of paths rules put modules at (the driver deletes the dead
    ones at the end); ``keep_graph`` snapshots the graph so that :meth:`rollback` can restore
    it (a copy of the graph: the driver asks for it only when it verifies each rewrite).
    """

    def __init__(self, view: ScopeView, created: set[str], *, keep_graph: bool = True) -> None:
        self.view = view
        self.created = created
        self.replaced: dict[str, nn.Module | None] = {}
        self._new_paths: set[str] = set()
        self._graph = copy.deepcopy(view.graph) if keep_graph else None
        self.state = "open"

    # -- modules ------------------------------------------------------------------------------
    def place(self, path: str, module: nn.Module | None) -> str:
        """Put ``module`` at ``path`` (None removes what is there), remembering the old one;
        the new module takes the scope's training mode. Returns ``path``."""
        self._require_open()
        root = self.view.root
        if path not in self.replaced:
            parent_path, _, name = path.rpartition(".")
            parent = root.get_submodule(parent_path) if parent_path else root
            self.replaced[path] = getattr(parent, name, None)
        if module is not None:
            module.train(root.training)
            if path not in self.created:
                self._new_paths.add(path)
            self.created.add(path)
        set_submodule(root, path, module)
        self.view.invalidate()
        return path

    def fresh_path(self, near: str, stem: str) -> str:
        """An unused submodule path next to ``near`` (a path of the scope, may be '')."""
        base = f"{near}.{stem}" if near else stem
        candidate, i = base, 1
        while self.view.exists(candidate):
            candidate = f"{base}_{i}"
            i += 1
        return candidate

    def substitute(
        self, node: Node, module: nn.Module, *, stem: str, exclusive: bool, near: str | None = None
    ) -> str:
        """Make ``node`` call ``module``: at its current path when that module is
        ``exclusive`` to this site (checkpoint keys stay where they were), else at a fresh
        path under ``near`` (default: next to the old module), whose other users keep the old
        one. Returns the path used."""
        if exclusive:
            return self.place(str(node.target), module)
        if near is None:
            near = str(node.target).rpartition(".")[0]
        path = self.fresh_path(near, stem)
        self.place(path, module)
        self.retarget(node, path)
        return path

    # -- graph --------------------------------------------------------------------------------
    def retarget(self, node: Node, path: str) -> None:
        """Make the ``call_module`` ``node`` call the module at ``path``."""
        self._require_open()
        node.target = path
        self.view.invalidate()

    def redirect(self, node: Node, to: Node) -> None:
        """Every use of ``node``'s value now reads ``to``."""
        self._require_open()
        node.replace_all_uses_with(to)
        self.view.invalidate()

    def set_input(self, node: Node, index: int, value: Any) -> None:
        """Replace argument ``index`` of ``node``."""
        self._require_open()
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
        self.view.invalidate()

    def insert_call(self, path: str, args: tuple[Any, ...], before: Node) -> Node:
        """A new call of the module at ``path`` just before ``before`` (sharing its metadata)."""
        self._require_open()
        with self.view.graph.inserting_before(before):
            node = self.view.graph.call_module(path, args)
        node.meta.update(before.meta)
        self.view.invalidate()
        return node

    def insert_function(self, fn: Callable[..., Any], args: tuple[Any, ...], before: Node) -> Node:
        """A new call of ``fn`` just before ``before`` (no shape known until propagated)."""
        self._require_open()
        with self.view.graph.inserting_before(before):
            node = self.view.graph.call_function(fn, args)
        self.view.invalidate()
        return node

    def erase_unused(self, nodes: Iterable[Node]) -> None:
        """Erase ``nodes`` (and anything that only fed them) once nothing uses them.

        Reads of their rank (``x.ndim`` in an assert) become constants first; other metadata
        reads keep a node alive (still correct: merged modules keep their output shapes).
        """
        self._require_open()
        graph = self.view.graph
        pending = list(nodes)
        while pending:
            node = pending.pop()
            if node.graph is not graph or node.op in ("placeholder", "output"):
                continue
            if getattr(node, "_erased", False):
                continue
            for user in list(node.users):
                if is_metadata_use(user, node):
                    self._fold_rank_read(user, node)
            if node.users:
                continue
            inputs = list(node.all_input_nodes)
            graph.erase_node(node)
            pending.extend(inputs)
        self.view.invalidate()

    def _fold_rank_read(self, user: Node, node: Node) -> None:
        """Replace ``node.ndim`` / ``node.dim()`` (an assert's check, say) by the constant rank,
        so that reading the rank does not keep a merged-away node alive."""
        is_ndim = (user.op == "call_function" and user.args[1:2] == ("ndim",)) or (
            user.op == "call_method" and user.target == "dim" and len(user.args) == 1
        )
        if not is_ndim:
            return
        rank = self.view.rank(node) if "shape" in node.meta else None
        if rank is None and node.op == "call_module":
            weight = getattr(self.view.module(str(node.target)), "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() >= 3:
                rank = weight.dim()
        if rank is None:
            return
        for consumer in list(user.users):
            consumer.args = fx.node.map_arg(consumer.args, lambda n: rank if n is user else n)
            consumer.kwargs = fx.node.map_arg(consumer.kwargs, lambda n: rank if n is user else n)
        self.view.graph.erase_node(user)

    # -- end ----------------------------------------------------------------------------------
    def commit(self) -> None:
        """Keep the edits."""
        self._require_open()
        self._graph = None
        self.state = "committed"

    def rollback(self) -> None:
        """Put back every module this transaction replaced and the graph as it was."""
        self._require_open()
        if self._graph is None:
            raise ReparamError("this transaction did not keep the graph: it cannot roll back")
        for path, old in reversed(list(self.replaced.items())):
            set_submodule(self.view.root, path, old)
        self.created -= self._new_paths
        self.view.graph = self._graph
        self._graph = None
        self.view.invalidate()
        self.state = "rolled back"

    def _require_open(self) -> None:
        if self.state != "open":
            raise ReparamError(f"the transaction is {self.state}")

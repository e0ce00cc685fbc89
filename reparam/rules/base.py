"""What a merge rule is: pattern + check + rewrite, and the context rules work in.

A rule never touches the user's model directly: it reads the traced graph of one *scope* (a
module whose forward was traced) through a :class:`RuleContext`, and edits the graph and the
scope's submodules only through its transaction, so the engine can report, verify and roll
back each rewrite.

* ``match(node, ctx)``: the pattern. ``None`` or a falsy :class:`~reparam.patterns.NoMatch`
  (with its reason) when ``node`` is not this rule's shape; :class:`PatternRule` matches a
  declarative :mod:`reparam.patterns` pattern.
* ``check(match, ctx)``: exactness (and cost) conditions. Returns a plan, or a
  :class:`~reparam.errors.Refusal` saying why not; the maths runs here, in pure tensor functions
  from :mod:`reparam.transforms`.
* ``rewrite(plan, ctx)``: the graph surgery. Returns a :class:`Rewrite` record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.fx as fx
from torch import nn
from torch.fx import Node

from reparam.graph.scope import OpaqueModule, ScopeView  # noqa: F401 - re-exported
from reparam.patterns import Bindings, NoMatch, Pattern, match
from reparam.transaction import Transaction


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


class RuleContext(ScopeView):
    """The scope a rule works in: a read-only :class:`~reparam.graph.scope.ScopeView` of the
    traced graph and its module, and ``tx``, the :class:`~reparam.transaction.Transaction`
    of the rewrite under way (the only way to edit). ``set_module``, ``call`` and
    ``erase_unused`` are kept as short names for ``tx.place``, ``tx.insert_call`` and
    ``tx.erase_unused``."""

    def __init__(
        self,
        root: nn.Module,
        graph: fx.Graph,
        scope_path: str = "",
        shared_modules: frozenset[int] = frozenset(),
        allow_slower: bool = False,
    ) -> None:
        super().__init__(root, graph, scope_path, shared_modules, allow_slower)
        self.created: set[str] = set()  # paths rules put modules at (dead ones get deleted)
        self._tx: Transaction | None = None

    def begin(self, *, keep_graph: bool = True) -> Transaction:
        """Open the transaction of the next rewrite (``keep_graph``: it can roll back)."""
        self._tx = Transaction(self, self.created, keep_graph=keep_graph)
        return self._tx

    @property
    def tx(self) -> Transaction:
        """The open transaction (one without rollback is opened when none is)."""
        if self._tx is None or self._tx.state != "open":
            return self.begin(keep_graph=False)
        return self._tx

    @property
    def replaced(self) -> dict[str, nn.Module | None]:
        return self.tx.replaced

    def set_module(self, path: str, module: nn.Module | None) -> None:
        self.tx.place(path, module)

    def fresh_path(self, near: str, stem: str) -> str:
        return self.tx.fresh_path(near, stem)

    def call(self, path: str, args: tuple[Any, ...], before: Node) -> Node:
        return self.tx.insert_call(path, args, before)

    def erase_unused(self, nodes: Iterable[Node], same_shape_as: Node | None = None) -> None:
        self.tx.erase_unused(nodes)


class Rule(ABC):
    """A merge rule. Subclasses set the class attributes and implement the three steps."""

    name: ClassVar[str]
    summary: ClassVar[str]
    pattern: ClassVar[str]
    refuses_when: ClassVar[tuple[str, ...]] = ()
    # pattern steps a NoMatch must have passed to be a near-miss: the anchor and one more
    near_miss_depth: ClassVar[int] = 2

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


class PatternRule(Rule):
    """A rule whose ``match`` is its declarative ``graph_pattern`` (:mod:`reparam.patterns`):
    the rule file is its maths docstring, the pattern, ``check`` and ``rewrite``.

    ``graph_pattern`` is usually a class attribute. A pattern that depends on the rule's
    options (a threshold, state the rule keeps) is set per instance in ``__init__``: the
    driver's anchor test and :meth:`match` read ``self.graph_pattern``."""

    graph_pattern: Pattern

    def match(self, node: Node, ctx: RuleContext) -> Bindings | NoMatch:
        return match(self.graph_pattern, node, ctx)


@dataclass
class SiteOutcome:
    """What one rule said at one site: fired, or refused with a reason."""

    rule: str
    site: str
    fired: bool
    reason: str = ""


def absmax(*tensors: torch.Tensor | None) -> float:
    """The largest ``|value|`` over the tensors (0 for none): two reductions per tensor, no
    temporary ``|t|`` as large as the tensor."""
    values = []
    for t in tensors:
        if t is None or not t.numel():
            continue
        if t.is_complex():
            values.append(float(t.detach().abs().max()))
        else:
            low, high = t.detach().aminmax()
            values.append(max(-float(low), float(high)))
    return max(values, default=0.0)

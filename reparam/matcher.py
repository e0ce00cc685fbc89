"""The matcher behind :mod:`reparam.patterns`: what a match returns and how it runs.

:func:`match` walks a pattern from the anchor node and returns :class:`Bindings` (truthy) or a
falsy :class:`NoMatch` holding the reason of the step that failed, the steps matched before it
(``trail``, ``depth``) and whether the failure is a refusal the report shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn
from torch.fx import Node

if TYPE_CHECKING:
    from reparam.patterns import Pattern


class GraphView(Protocol):
    """What the matcher reads: the scope's root and its trusted module lookup."""

    root: nn.Module

    def module(self, target: str) -> nn.Module: ...

    def qualified(self, target: str) -> str: ...


# -- results --------------------------------------------------------------------------------


class NoMatch:
    """Why a pattern did not match (falsy). ``depth`` counts the steps that matched first,
    ``trail`` names them; ``refusal`` marks a failure that is the rule's business (a layer it
    would fold, kept as it is), which the report lists as a refusal. The reason is worded
    only when read: most nodes fail at the anchor, and nobody asks them why."""

    __slots__ = ("_reason", "depth", "trail", "refusal")

    def __init__(
        self,
        reason: str | Callable[[], str],
        depth: int = 0,
        trail: tuple[str, ...] = (),
        refusal: bool = False,
    ) -> None:
        self._reason, self.depth, self.trail, self.refusal = reason, depth, trail, refusal

    @property
    def reason(self) -> str:
        if not isinstance(self._reason, str):
            self._reason = self._reason()
        return self._reason

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        if not self.trail:
            return self.reason
        return f"{' → '.join(self.trail)} found, but {self.reason}"

    def __repr__(self) -> str:
        return f"NoMatch({str(self)!r}, depth={self.depth})"


class Bindings(Mapping[str, Any]):
    """What a match captured, by name (truthy, even when empty).

    ``b[name]`` is the node of a :class:`Module` / :class:`Call` / :class:`Where` /
    :class:`Any_` capture, the :class:`~reparam.graph.views.AffineView` (or its
    :class:`~reparam.errors.Refusal`) of an :class:`Affine`, the
    :class:`~reparam.graph.views.SumView` of a :class:`Sum`, and the tuple of nodes walked by
    :class:`Through` / :class:`Into`. ``b.module(name)`` is a :class:`Module` capture's module,
    ``b.each(name)`` the per-item bindings of a :class:`Sum` or :class:`ListOf`.
    """

    def __init__(
        self,
        values: dict[str, Any],
        modules: dict[str, nn.Module],
        each: dict[str, list[Bindings]],
    ) -> None:
        self._values, self._modules, self._each = values, modules, each

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return True

    def module(self, name: str) -> nn.Module:
        return self._modules[name]

    def each(self, name: str) -> list[Bindings]:
        return self._each[name]

    def __repr__(self) -> str:
        return f"Bindings({', '.join(self._values)})"


def match(pattern: Pattern, node: object, view: GraphView) -> Bindings | NoMatch:
    """Match ``pattern`` at ``node`` of ``view``'s graph (the nodes it looked at go to the
    innermost :func:`recording_visits`, if any)."""
    state = MatchState(view)
    try:
        failed = pattern._match(node, state, "the node")
    finally:
        if _RECORDERS:
            _RECORDERS[-1].update(state.visited)
    if failed is not None:
        return failed
    return Bindings(state.values, state.modules, state.each)


_RECORDERS: list[set[Node]] = []


@contextlib.contextmanager
def recording_visits() -> Iterator[set[Node]]:
    """Collect the graph nodes every :func:`match` inside looks at (the driver's memo of
    tries that did not fire depends on them)."""
    seen: set[Node] = set()
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.pop()


def note_visits(nodes: Iterable[object]) -> None:
    """Note graph nodes a rule read beyond what its pattern looked at (a :class:`Given` or a
    ``check`` that walks further, to the other terms of a sum, say): the innermost
    :func:`recording_visits` collects them as it does a match's, so the driver forgets a
    remembered try that did not fire once one of them, or a neighbour, changes."""
    if _RECORDERS:
        _RECORDERS[-1].update(n for n in nodes if isinstance(n, Node))


class MatchState:
    """Captures and progress of one match (restored when an alternative fails)."""

    __slots__ = ("view", "values", "modules", "each", "trail", "visited")

    def __init__(self, view: GraphView) -> None:
        self.view = view
        self.values: dict[str, Any] = {}
        self.modules: dict[str, nn.Module] = {}
        self.each: dict[str, list[Bindings]] = {}
        self.trail: list[str] = []
        self.visited: set[Node] = set()  # every node a pattern looked at, matched or not

    def save(self) -> tuple:
        return dict(self.values), dict(self.modules), dict(self.each), len(self.trail)

    def restore(self, saved: tuple) -> None:
        self.values, self.modules, self.each, n = saved
        del self.trail[n:]

    def accept(self, pattern: Pattern, value: Any, label: str, module: Any = None) -> None:
        self.trail.append(label)
        if pattern.name is not None:
            self.values[pattern.name] = value
            if module is not None:
                self.modules[pattern.name] = module

    def fail(self, reason: str | Callable[[], str], refusal: bool = False) -> NoMatch:
        return NoMatch(reason, len(self.trail), tuple(self.trail), refusal)


def describe_node(value: object, view: GraphView) -> str:
    """A short name for what a pattern met: ``Conv2d 'stem.conv'``, ``relu 'relu_1'``."""
    if not isinstance(value, Node):
        return f"the constant {value!r:.40}"
    if value.op == "call_module":
        try:
            kind = type(view.root.get_submodule(str(value.target))).__name__
        except AttributeError:
            kind = "module"
        return f"{kind} '{view.qualified(str(value.target))}'"
    if value.op == "call_function":
        return f"{getattr(value.target, '__name__', value.target)} '{value.name}'"
    if value.op == "call_method":
        return f".{value.target}() '{value.name}'"
    if value.op == "placeholder":
        return f"the input '{value.name}'"
    if value.op == "get_attr":
        return f"the attribute '{value.target}'"
    return f"'{value.name}'"

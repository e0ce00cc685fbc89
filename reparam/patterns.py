"""Declarative graph patterns: a rule says what it looks for, :func:`match` finds it.

A pattern reads like the computation it matches, from the rule's anchor node outwards
(towards the node's inputs, unless :class:`Into` walks to its users)::

    Affine(CONV.bind("conv")).bind("norm")                 # norm(conv(x))
    Module(nn.Conv2d, Call(F.pad).bind("pad")).bind("conv")  # conv(F.pad(x, p))
    Into(Affine().bind("affine"), CONV.bind("conv"))       # conv(norm(x)), anchored at norm

``match(pattern, node, view)`` (:mod:`reparam.matcher`) returns :class:`Bindings` (truthy:
the captured nodes, modules and canonical views by name) or a falsy :class:`NoMatch` with the
reason of the step that failed and the steps that had matched before it ("batch_norm 'bn' →
Conv2d 'conv' found, but the output of Conv2d 'conv' has 2 users"). A :class:`NoMatch` past
the rule's anchor is a *near-miss*, which :func:`reparam.explain` lists.

Modules are looked up through ``view.module`` (the trust model): a layer with hooks or
overridden internals comes back as an ``OpaqueModule`` and matches no :class:`Module`
pattern; ``Module(..., refuse_opaque=True)`` turns that into a refusal the report shows.
The n-ary sum and the per-channel affine are the canonical views of
:mod:`reparam.graph.views`, so ``a + b``, ``torch.add``, ``+=`` and ``sum([...])`` are one
:class:`Sum`, and BatchNorm (module or functional) and ``x * gamma`` are one :class:`Affine`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.fx import Node

from reparam.convspec import is_plain_conv
from reparam.errors import Refusal
from reparam.graph import anchors
from reparam.graph.anchors import MODULE_CALL, AnchorKeys
from reparam.graph.scope import OpaqueModule
from reparam.graph.views import (
    ADD_KEYS,
    AFFINE_KEYS,
    channel_affine,
    could_be_channel_affine,
    is_add,
    is_sum_root,
    sum_terms,
    value_users,
)
from reparam.matcher import Bindings, GraphView, MatchState, NoMatch, describe_node, match
from reparam.try_memo import StaleMemoError, checking

# -- patterns -------------------------------------------------------------------------------


class Pattern:
    """Base of all patterns: ``bind`` names a capture, ``|`` makes alternatives."""

    name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a subclass that changes what it accepts, and not its anchor keys, may anchor at
        # nodes its base's keys leave out: it is offered every node
        changes = {"_match", "may_anchor", "accepts", "predicate"} & set(cls.__dict__)
        if changes and "anchor_keys" not in cls.__dict__ and cls.__module__ != __name__:
            cls.anchor_keys = Pattern.anchor_keys  # type: ignore[method-assign]
        # every pattern notes the node it is asked about (the driver's memo depends on them)
        inner = cls.__dict__.get("_match")
        if inner is None or getattr(inner, "_notes_visits", False):
            return

        def _match(self: Pattern, value: object, state: MatchState, role: str) -> NoMatch | None:
            if isinstance(value, Node):
                state.visited.add(value)
            return inner(self, value, state, role)

        _match._notes_visits = True  # type: ignore[attr-defined]
        _match.__doc__ = inner.__doc__
        cls._match = _match  # type: ignore[method-assign]

    def bind(self, name: str) -> Pattern:
        """This pattern, capturing what it matches as ``name``."""
        clone = copy.copy(self)
        clone.name = name
        return clone

    def single_user(self) -> Pattern:
        """This pattern, and the value it matches is read by exactly one node."""
        return Users(self, 1)

    def __or__(self, other: Pattern) -> Pattern:
        return AnyOf(self, other)

    def describe(self) -> str:
        return type(self).__name__

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        """A cheap look at ``node`` alone: False when this pattern cannot match there (the
        driver then does not try the rule at that node). True means "maybe"."""
        return True

    def anchor_keys(self) -> AnchorKeys:
        """The keys (:func:`reparam.graph.anchors.node_key`) of every node :meth:`may_anchor`
        can accept, for the driver's index; None: any node. A pattern that overrides
        :meth:`may_anchor` to turn nodes down overrides this too."""
        return None

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        raise NotImplementedError

    def _args(
        self,
        node: Node,
        args: tuple[Pattern, ...],
        state: MatchState,
        label: str,
        names: tuple[str, ...] = (),
    ) -> NoMatch | None:
        for i, sub in enumerate(args):
            if i < len(node.args):
                value = node.args[i]
            elif i < len(names) and names[i] in node.kwargs:  # given by keyword
                value = node.kwargs[names[i]]
            else:
                return state.fail(f"{label} has no argument {i}")
            # argument 0 is matched right after its node: "its" is unambiguous there
            role = "its input" if i == 0 else f"argument {i} of {label}"
            failed = sub._match(value, state, role)
            if failed is not None:
                return failed
        return None

    def __repr__(self) -> str:
        return self.describe() + (f".bind({self.name!r})" if self.name else "")


def _mismatch(state: MatchState, role: str, value: object, expected: str) -> NoMatch:
    view = state.view
    return state.fail(lambda: f"{role} is {describe_node(value, view)}, not {expected}")


class Any_(Pattern):  # noqa: N801 - ``Any`` is typing's
    """Anything: a node or a constant."""

    def describe(self) -> str:
        return "anything"

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        if self.name is not None:
            state.values[self.name] = value
        return None


class Constant(Pattern):
    """A Python constant argument (not a node) of one of ``types``; a bool is a number only
    when ``bool`` is listed."""

    def __init__(self, types: type | tuple[type, ...] = (int, float)) -> None:
        self.types = types if isinstance(types, tuple) else (types,)

    def describe(self) -> str:
        return " or ".join(t.__name__ for t in self.types)

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return False

    def anchor_keys(self) -> AnchorKeys:
        return frozenset()

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        is_bool = isinstance(value, bool) and bool not in self.types
        if isinstance(value, Node) or is_bool or not isinstance(value, self.types):
            return _mismatch(state, role, value, f"a constant {self.describe()}")
        if self.name is not None:
            state.values[self.name] = value
        return None


class Module(Pattern):
    """A call of a submodule that is an instance of ``kind`` (a type or tuple of types) or
    satisfies ``kind(module)``, its arguments matching ``args`` in order (extra ones free).
    A function ``kind`` is also the anchor test (:meth:`may_anchor` runs it on the module),
    so it must be cheap and read the module only."""

    def __init__(
        self,
        kind: type | tuple[type, ...] | Callable[[nn.Module], bool],
        *args: Pattern,
        label: str | None = None,
        refuse_opaque: bool = False,
    ) -> None:
        self.kind, self.args, self.refuse_opaque = kind, args, refuse_opaque
        if label is None:
            types = kind if isinstance(kind, tuple) else (kind,)
            label = "|".join(getattr(t, "__name__", "module") for t in types)
        self.label = label

    def describe(self) -> str:
        return self.label

    def _accepts(self, module: nn.Module) -> bool:
        if isinstance(self.kind, (type, tuple)):
            return isinstance(module, self.kind)
        return bool(self.kind(module))

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        if node.op != "call_module":
            return False
        try:
            module = root.get_submodule(str(node.target))
        except AttributeError:
            return True
        # sound: a match accepts the module itself (or, when opaque, tests the module itself)
        return self._accepts(module)

    def anchor_keys(self) -> AnchorKeys:
        return frozenset({MODULE_CALL})

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        if not (isinstance(value, Node) and value.op == "call_module"):
            return _mismatch(state, role, value, f"a {self.label}")
        module = state.view.module(str(value.target))
        if isinstance(module, OpaqueModule):
            actual = state.view.root.get_submodule(str(value.target))
            where = state.view.qualified(str(value.target))
            if self._accepts(actual):
                return state.fail(f"{self.label} '{where}' {module.reason}", self.refuse_opaque)
            return _mismatch(state, role, value, f"a {self.label}")
        if not self._accepts(module):
            return _mismatch(state, role, value, f"a {self.label}")
        label = f"{type(module).__name__} '{state.view.qualified(str(value.target))}'"
        state.accept(self, value, label, module)
        return self._args(value, self.args, state, label)


def _function_name(node: Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", "")


class Call(Pattern):
    """A call of a function (by identity) or a method / function name (a string matches
    ``x.flatten()`` and ``torch.flatten(x)`` alike), arguments matching ``args`` in order
    (``names``: the parameter names of those positions, so that ``torch.cat(tensors=[...])``
    matches as ``torch.cat([...])``); ``where(node)``, if given, must hold too (its docstring
    says what it means)."""

    def __init__(
        self,
        target: Callable | str | Iterable[Callable | str],
        *args: Pattern,
        label: str = "",
        where: Callable[[Node], bool] | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        self.where, self.arg_names = where, names
        targets = list(target) if isinstance(target, (list, tuple, set, frozenset)) else [target]
        self.names = frozenset(t for t in targets if isinstance(t, str))
        self.functions = tuple(t for t in targets if not isinstance(t, str))
        self.args = args
        self.label = label or "|".join(
            sorted(self.names) + [getattr(f, "__name__", str(f)) for f in self.functions]
        )

    def describe(self) -> str:
        return self.label

    def accepts(self, node: Node) -> bool:
        if node.op == "call_function" and any(node.target is f for f in self.functions):
            return True
        return node.op in ("call_function", "call_method") and _function_name(node) in self.names

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return self.accepts(node)

    def anchor_keys(self) -> AnchorKeys:
        return anchors.function_keys(self.functions, self.names)

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        if not (isinstance(value, Node) and self.accepts(value)):
            return _mismatch(state, role, value, f"a call of {self.label}")
        if self.where is not None and not self.where(value):
            doc = (self.where.__doc__ or self.where.__name__).strip()
            return state.fail(f"{role} is {describe_node(value, state.view)}, not {doc}")
        label = describe_node(value, state.view)
        state.accept(self, value, label)
        return self._args(value, self.args, state, label, self.arg_names)


class Where(Pattern):
    """A node satisfying ``predicate(node, view)``; ``label`` says what that means.
    ``keys``: the anchor keys (:func:`reparam.graph.anchors.function_keys`) of every node
    ``predicate`` can accept, so that the driver offers a rule anchored here only those
    (checked at every match in the suite's checking mode, ``REPARAM_CHECK_MEMO=1``)."""

    def __init__(
        self,
        predicate: Callable[[Node, Any], bool],
        label: str,
        *,
        keys: Iterable[anchors.Key] | None = None,
    ) -> None:
        self.predicate, self.label = predicate, label
        self.keys = None if keys is None else frozenset(keys)

    def describe(self) -> str:
        return self.label

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return self.keys is None or anchors.node_key(node) in self.keys

    def anchor_keys(self) -> AnchorKeys:
        return self.keys

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        if not (isinstance(value, Node) and self.predicate(value, state.view)):
            return _mismatch(state, role, value, self.label)
        if self.keys is not None and anchors.node_key(value) not in self.keys and checking():
            raise StaleMemoError(
                f"Where({self.label!r}) accepted '{value.name}', whose anchor key "
                f"{anchors.node_key(value)} is not among its keys"
            )
        state.accept(self, value, describe_node(value, state.view))
        return None


class Given(Pattern):
    """A test on a value *and what the pattern captured before it* (a back-reference):
    ``fn(value, captures, view)`` returns None when it does not hold (``reason`` says why),
    else a result, captured under the pattern's name. ``Sum(some=AllOf(branch,
    Given(partners, ...)))`` picks the term whose siblings fit what ``branch`` captured.
    ``quiet``: a failure here is no near-miss (what came before is common, what fails is
    what makes the rule's shape)."""

    def __init__(
        self,
        fn: Callable[[Any, Bindings, Any], Any],
        label: str,
        *,
        reason: str = "",
        quiet: bool = False,
    ) -> None:
        self.fn, self.label, self.reason = fn, label, reason or f"not {label}"
        self.quiet = quiet

    def describe(self) -> str:
        return self.label

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        result = self.fn(value, Bindings(state.values, state.modules, state.each), state.view)
        if result is None:
            failed = state.fail(self.reason)
            if self.quiet:  # the shape is not there at all: no near-miss
                failed.depth = 0
            return failed
        if self.name is not None:
            state.values[self.name] = result
        return None


class Affine(Pattern):
    """A per-channel affine ``scale[c] * x + shift[c]`` (eval batch norm, module or functional,
    or ``x * gamma``), its input matching ``input``. A norm that is *not* affine in eval
    semantics (batch statistics) still matches and binds its :class:`Refusal`, so the rule's
    check can say why; with ``eval_only`` it does not match (the refusal's reason is the
    failure's), for a pattern that has another reading of such a node. ``kinds`` restricts
    the view's kind (``batch_norm``, ``functional_batch_norm``, ``channel_scale``)."""

    def __init__(
        self, input: Pattern | None = None, *, kinds: Iterable[str] = (), eval_only: bool = False
    ) -> None:
        self.input, self.kinds, self.eval_only = input, frozenset(kinds), eval_only

    def describe(self) -> str:
        return "per-channel affine"

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return could_be_channel_affine(node, root)

    def anchor_keys(self) -> AnchorKeys:
        return AFFINE_KEYS

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        view = channel_affine(value, state.view.root) if isinstance(value, Node) else None
        if view is None:
            return _mismatch(state, role, value, "a batch norm or per-channel scale")
        assert isinstance(value, Node)
        if isinstance(view, Refusal):
            if self.eval_only:
                return _mismatch(state, role, value, f"an affine map ({view.reason})")
            source, label = value.args[0], describe_node(value, state.view)
        else:
            if self.kinds and view.kind not in self.kinds:
                return _mismatch(state, role, value, " or ".join(sorted(self.kinds)))
            source, label = view.input, f"{view.kind} '{_site(value, state.view)}'"
        state.accept(self, view, label)
        if self.input is None:
            return None
        return self.input._match(source, state, "its input")


def _site(node: Node, view: GraphView) -> str:
    if node.op == "call_module":
        return view.qualified(str(node.target))
    return node.name


class Sum(Pattern):
    """An n-ary sum (``a + b``, ``torch.add``, ``+=``, ``sum([...])``, any association) of at
    least ``min_terms`` terms; with ``term``, every term must match it (per-term bindings in
    ``b.each(name)``); with ``some``, at least one term must: the first that does gives its
    captures (the sum itself is captured before, so a :class:`Given` inside ``some`` can
    read the other terms). ``whole``: only the root of a sum, not an add inside a larger
    single-use sum."""

    def __init__(
        self,
        term: Pattern | None = None,
        *,
        min_terms: int = 2,
        some: Pattern | None = None,
        whole: bool = False,
    ) -> None:
        self.term, self.min_terms, self.some, self.whole = term, min_terms, some, whole

    def describe(self) -> str:
        return "sum"

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return is_add(node)

    def anchor_keys(self) -> AnchorKeys:
        return ADD_KEYS

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        view = sum_terms(value) if isinstance(value, Node) else None
        if view is None:
            return _mismatch(state, role, value, "a sum")
        state.visited.update(view.adds)
        label = f"sum '{view.root.name}'"
        if self.whole and not is_sum_root(view.root):
            return state.fail(f"{label} is part of a larger sum")
        if len(view.terms) < self.min_terms:
            return state.fail(f"{label} has {len(view.terms)} terms, not {self.min_terms}+")
        state.accept(self, view, label)
        if self.term is not None:
            items = _each(self.term, view.terms, state, f"a term of {label}")
            if isinstance(items, NoMatch):
                return items
            if self.name is not None:
                state.each[self.name] = items
        if self.some is not None:
            return _some(self.some, view.terms, state, f"a term of {label}")
        return None


def _some(pattern: Pattern, values: list[object], state: MatchState, role: str) -> NoMatch | None:
    """The first of ``values`` that ``pattern`` matches keeps its captures; when none does,
    the reason of the one that got furthest."""
    best: NoMatch | None = None
    for value in values:
        saved = state.save()
        failed = pattern._match(value, state, role)
        if failed is None:
            return None
        state.restore(saved)
        if best is None or failed.depth > best.depth:
            best = failed
    assert best is not None
    return best


class ListOf(Pattern):
    """A list or tuple argument (``torch.cat([a, b])``) of at least ``min_len`` items, each
    matching ``item`` (per-item bindings in ``b.each(name)``)."""

    def __init__(self, item: Pattern, *, min_len: int = 1) -> None:
        self.item, self.min_len = item, min_len

    def describe(self) -> str:
        return f"list of {self.item.describe()}"

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            return state.fail(f"{role} is not a list of {self.min_len}+ items")
        items = _each(self.item, list(value), state, f"an item of {role}")
        if isinstance(items, NoMatch):
            return items
        if self.name is not None:
            state.values[self.name] = tuple(value)
            state.each[self.name] = items
        return None


def _each(
    pattern: Pattern, values: list[object], state: MatchState, role: str
) -> list[Bindings] | NoMatch:
    items = []
    for value in values:
        sub = MatchState(state.view)
        sub.trail = list(state.trail)
        failed = pattern._match(value, sub, role)
        state.visited.update(sub.visited)  # an item's own captures, but the match's visits
        if failed is not None:
            return failed
        items.append(Bindings(sub.values, sub.modules, sub.each))
    return items


class AnyOf(Pattern):
    """The first alternative that matches; when none does, the reason of the one that got
    furthest."""

    def __init__(self, *alternatives: Pattern) -> None:
        self.alternatives = alternatives

    def describe(self) -> str:
        return " or ".join(a.describe() for a in self.alternatives)

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return any(a.may_anchor(node, root) for a in self.alternatives)

    def anchor_keys(self) -> AnchorKeys:
        return anchors.union(a.anchor_keys() for a in self.alternatives)

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        best: NoMatch | None = None
        for alternative in self.alternatives:
            saved = state.save()
            failed = alternative._match(value, state, role)
            if failed is None:
                if self.name is not None:
                    state.values[self.name] = value
                return None
            state.restore(saved)
            if best is None or failed.depth > best.depth:
                best = failed
        assert best is not None
        return best


class AllOf(Pattern):
    """Every pattern matches the same value (captures of all of them)."""

    def __init__(self, *patterns: Pattern) -> None:
        self.patterns = patterns

    def describe(self) -> str:
        return " and ".join(p.describe() for p in self.patterns)

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return all(p.may_anchor(node, root) for p in self.patterns)

    def anchor_keys(self) -> AnchorKeys:
        return anchors.intersection(p.anchor_keys() for p in self.patterns)

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        for pattern in self.patterns:
            failed = pattern._match(value, state, role)
            if failed is not None:
                return failed
        if self.name is not None:
            state.values[self.name] = value
        return None


class Users(Pattern):
    """``inner``, and the value it matched is read (metadata reads aside) by ``count`` nodes."""

    def __init__(self, inner: Pattern, count: int = 1) -> None:
        self.inner, self.count = inner, count

    def bind(self, name: str) -> Pattern:
        return Users(self.inner.bind(name), self.count)

    def describe(self) -> str:
        return f"{self.inner.describe()} (read by {self.count})"

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return self.inner.may_anchor(node, root)

    def anchor_keys(self) -> AnchorKeys:
        return self.inner.anchor_keys()

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        failed = self.inner._match(value, state, role)
        if failed is not None:
            return failed
        assert isinstance(value, Node)
        return _user_count(value, self.count, state)


def _user_count(node: Node, count: int, state: MatchState) -> NoMatch | None:
    """None when ``node``'s output has ``count`` users, else the failure saying how many."""
    n = len(value_users(node))
    if n == count:
        return None
    return state.fail(f"the output of {describe_node(node, state.view)} has {n} users, not {count}")


def SingleUser(inner: Pattern) -> Pattern:  # noqa: N802 - reads as a pattern
    """``inner``, whose value only one node reads."""
    return Users(inner, 1)


def Capture(name: str, inner: Pattern) -> Pattern:  # noqa: N802 - reads as a pattern
    """``inner`` captured as ``name`` (the same as ``inner.bind(name)``)."""
    return inner.bind(name)


class Through(Pattern):
    """Zero or more ``skip`` nodes upwards along their first argument, then ``then``:
    ``Through(Call("flatten"), Module(nn.Linear))`` matches ``linear(x).flatten()`` and
    ``linear(x)``. A skipped node must be read by one node only unless not ``exclusive``;
    ``exclusive="below"``: every node below the first (the node matched by ``then``
    included) must be, the first may have other readers (a value the rewrite replaces as a
    whole). At least ``min_steps`` are skipped. ``step(node, view)`` gives the node a
    skipped node is walked from (default its first argument).
    Binds the skipped nodes, outermost first."""

    def __init__(
        self,
        skip: Call | Where,
        then: Pattern,
        *,
        exclusive: bool | str = True,
        min_steps: int = 0,
        step: Callable[[Node, Any], object] | None = None,
    ) -> None:
        self.skip, self.then, self.exclusive, self.min_steps = skip, then, exclusive, min_steps
        self.step = step

    def describe(self) -> str:
        return f"{self.then.describe()} (through {self.skip.describe()})"

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        skip = self.skip.may_anchor(node, root)
        return skip or (self.min_steps == 0 and self.then.may_anchor(node, root))

    def anchor_keys(self) -> AnchorKeys:
        if self.min_steps > 0:
            return self.skip.anchor_keys()
        return anchors.union([self.skip.anchor_keys(), self.then.anchor_keys()])

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        skipped: list[Node] = []
        while isinstance(value, Node) and self._skips(value, state, not skipped) and value.args:
            skipped.append(value)
            state.visited.add(value)
            state.trail.append(describe_node(value, state.view))
            value = value.args[0] if self.step is None else self.step(value, state.view)
        if len(skipped) < self.min_steps:
            return _mismatch(state, role, value, self.skip.describe())
        if self.exclusive == "below" and skipped and isinstance(value, Node):
            failed = _user_count(value, 1, state)
            if failed is not None:
                return failed
        if self.name is not None:
            state.values[self.name] = tuple(skipped)
        if skipped:
            role = f"the input of {describe_node(skipped[-1], state.view)}"
        return self.then._match(value, state, role)

    def _skips(self, node: Node, state: MatchState, first: bool) -> bool:
        shared = self.exclusive and not (first and self.exclusive == "below")
        if shared and len(value_users(node)) != 1:
            return False
        if isinstance(self.skip, Call):
            return self.skip.accepts(node)
        return bool(self.skip.predicate(node, state.view))


class Into(Pattern):
    """``source`` at the node, whose value flows (each step read by one node only, through
    zero or more ``via`` nodes) into the first argument of a node matching ``consumer``.
    Anchors a rule at a producer: ``Into(Affine(), Module(CONVS))`` is ``conv(norm(x))`` seen
    from the norm. Binds the ``via`` nodes walked."""

    def __init__(self, source: Pattern, consumer: Pattern, *, via: Call | Where | None = None):
        self.source, self.consumer, self.via = source, consumer, via

    def describe(self) -> str:
        return f"{self.source.describe()} into {self.consumer.describe()}"

    def may_anchor(self, node: Node, root: nn.Module) -> bool:
        return self.source.may_anchor(node, root)

    def anchor_keys(self) -> AnchorKeys:
        return self.source.anchor_keys()

    def _match(self, value: object, state: MatchState, role: str) -> NoMatch | None:
        failed = self.source._match(value, state, role)
        if failed is not None:
            return failed
        assert isinstance(value, Node)
        walked: list[Node] = []
        current = value
        while True:
            users = value_users(current)
            label = describe_node(current, state.view)
            if len(users) != 1:
                return _user_count(current, 1, state)
            user = users[0]
            saved = state.save()
            role = f"the user of {label}" if walked else "its user"
            failed = self.consumer._match(user, state, role)
            if failed is None:
                if user.args[:1] != (current,):
                    state.restore(saved)
                    return state.fail(f"{label} is not the first argument of its user")
                if self.name is not None:
                    state.values[self.name] = tuple(walked)
                return None
            state.restore(saved)
            if self.via is None or not self._via(user, state):
                return failed
            walked.append(user)
            state.visited.add(user)
            state.trail.append(describe_node(user, state.view))
            current = user

    def _via(self, node: Node, state: MatchState) -> bool:
        if isinstance(self.via, Call):
            return self.via.accepts(node)
        assert self.via is not None
        return bool(self.via.predicate(node, state.view))


# -- vocabulary -------------------------------------------------------------------------------

#: a forward (non-transposed) Conv1d/2d/3d, subclasses traced as leaves included
CONV = Module(is_plain_conv, label="conv")


__all__ = [
    "CONV",
    "Affine",
    "AllOf",
    "AnyOf",
    "Any_",
    "Bindings",
    "Call",
    "Capture",
    "Constant",
    "Given",
    "GraphView",
    "Into",
    "ListOf",
    "Module",
    "NoMatch",
    "Pattern",
    "SingleUser",
    "Sum",
    "Through",
    "Users",
    "Where",
    "describe_node",
    "match",
]

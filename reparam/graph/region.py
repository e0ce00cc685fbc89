"""The part of a scope's graph its rewrites changed, run before and after on recorded values.

A scope's check compares the rewritten forward with the forward it replaced. When a parent
merges two nodes at its end (a norm folded into the head of a whole network), running both
forwards whole repeats every unchanged node twice in float64 for nothing. The *region* of a
scope's rewrites is what differs between the graph before (``G0``) and after (``G1``); fx
edits a graph in place, so a node that stays is the same object in both:

- a node of ``G1`` is *unchanged* when it was in ``G0`` with the same op, target and
  arguments, every input of it is unchanged, and what it reads is what it read before: at a
  ``call_module`` target and every path under it the same module objects, each in the same
  state (:func:`_state`: class, attributes, parameters, buffers and children by identity, one
  level into containers, and a fingerprint of every tensor); at a ``get_attr`` target the
  same object with the same fingerprint;
- the region is every other node, in ``G0`` and in ``G1``; its inputs are unchanged nodes,
  whose values the capture's run already holds (the values the forward computed on the
  scope's recorded inputs).

:func:`region_error` runs ``G0``'s region with the modules as they were and ``G1``'s with the
modules as they are, both in float64 on those values, and compares the outputs. Unchanged
nodes compute the same function in both graphs, so the two forwards agree wherever their
regions agree on the values reaching them. It is the same kind of evidence as a scope's
check (the forward is compared on the values it received, cast to float64), one level down:
the reference is the scope as it was before its own rewrites, its children already deployed
and checked.

That argument needs every unchanged node to read only its arguments and the state above.
Wherever that cannot be shown, :func:`take_before` raises :class:`Unverifiable` or
:func:`changed_region` returns the reason, and the caller checks the whole scope instead:

- the graph calls something whose reach is unknown (a user's leaf or wrapped function, a
  module with a hook or parametrization in its subtree, a global module hook) or reads a
  handle whose writes no version counter sees (``x.data``, ``x.numpy()``);
- a tensor cannot be fingerprinted (sparse, quantized, a conjugate view);
- a value the region needs was not kept, is of a kind that may hold tensors unseen, or was
  written in place after it was computed (its version counters moved);
- the rewrites moved kept nodes, changed a module that no region node calls, or changed a
  module the region's ``G0`` side calls in place;
- the region writes into one of its inputs, or does not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from reparam.float64_run import Places, float64_reads
from reparam.graph.capture import UNKNOWN, tensor_versions
from reparam.graph.trust import is_trusted_leaf, opaque_reason
from reparam.verify import _map_tensors, _to_double, float64_default, relative_error

_TABLES = ("_parameters", "_buffers", "_modules")
_INTEGER_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK = 1 << 20
_WEIGHTS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


class Unverifiable(Exception):
    """Something the region cannot vouch for (a call whose reach is unknown, a tensor it
    cannot fingerprint): the scope is checked whole."""


def _weights(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Odd pseudo-random integers, one per position of a chunk (the same every time)."""
    found = _WEIGHTS.get((device, dtype))
    if found is None:
        generator = torch.Generator().manual_seed(0x5EED)
        drawn = torch.randint(-(2**31), 2**31 - 1, (_CHUNK,), generator=generator) | 1
        found = _WEIGHTS[(device, dtype)] = drawn.to(dtype=dtype, device=device)
    return found


def _fingerprint(t: torch.Tensor) -> tuple[int, int]:
    """The tensor's version counter and a position-weighted sum of its elements' bits read
    as integers (wrapping, with odd weights: any change to one element changes it): a write
    through ``.data`` leaves the version as it was but changes the sum, a permutation of the
    elements too."""
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise Unverifiable(f"a {t.layout} / {t.dtype} tensor on {t.device}")
    size = t.element_size()
    if size not in _INTEGER_VIEWS:
        raise Unverifiable(f"a {t.dtype} tensor")
    try:
        bits = t.detach().reshape(-1).view(_INTEGER_VIEWS[size])
        if size < 4:
            bits = bits.to(torch.int32)  # sums of 8 or 16 bits would wrap too soon
        weights = _weights(t.device, bits.dtype)
        total = 0
        for index, start in enumerate(range(0, bits.numel(), _CHUNK)):
            chunk = bits[start : start + _CHUNK]
            total += (index + 1) * int(torch.dot(chunk, weights[: chunk.numel()]))
    except Exception as exc:  # noqa: BLE001 - a conjugate or nested view, ...
        raise Unverifiable(f"a tensor it cannot read as integers ({exc})") from exc
    return t._version, total


def _state(m: nn.Module) -> tuple[Any, ...]:
    """What a module computes with: every attribute, parameter, buffer and child it holds (the
    objects themselves, compared by identity), one level into the lists, tuples, sets and
    dicts among its attributes (hooks among them), and a fingerprint of each tensor in all
    of these."""
    names: list[str] = ["__class__"]
    objects: list[Any] = [type(m)]
    tensors: list[torch.Tensor] = []
    for key, value in m.__dict__.items():
        if key in _TABLES:
            items = value.items()
        elif isinstance(value, dict):
            names.append(key)
            objects.append(value)
            items = [(f"{key}[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            names.append(key)
            objects.append(value)
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        for name, item in items:
            names.append(name)
            objects.append(item)
            if isinstance(item, torch.Tensor):
                tensors.append(item)
    return tuple(names), tuple(objects), tuple(_fingerprint(t) for t in tensors)


def _same_state(a: tuple[Any, ...] | None, b: tuple[Any, ...]) -> bool:
    return (
        a is not None
        and a[0] == b[0]
        and all(x is y for x, y in zip(a[1], b[1], strict=True))
        and a[2] == b[2]
    )


def _tensor_state(value: Any) -> Any:
    return _fingerprint(value) if isinstance(value, torch.Tensor) else None


def _attribute(root: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)


@dataclass(frozen=True)
class OldNode:
    """A node as it was: fx rewrites a graph in place, so a node that stays keeps its object
    while its target and arguments may be replaced (argument tuples are replaced, never
    edited, so the ones kept here are the old ones)."""

    node: fx.Node
    op: str
    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Before:
    """A scope as it was before its rewrites: its graph's nodes, its modules by path with
    their states, and what each ``get_attr`` of the graph read."""

    nodes: list[OldNode]
    modules: dict[str, nn.Module]
    states: dict[int, tuple[Any, ...]]  # id(module) -> _state before
    attributes: dict[str, tuple[Any, Any]]  # get_attr target -> (object, fingerprint)


_OWN_MODULES = ("torch", "_operator", "operator", "math", "builtins", "reparam")
# reads that give a second handle on a tensor's memory with its own version counter (or none)
_ESCAPING_METHODS = frozenset({"numpy", "untyped_storage", "storage", "_typed_storage", "tolist"})


def _hook_free(module: nn.Module) -> bool:
    """No hook, instance forward, TorchScript or parametrization anywhere in its subtree."""
    return all(
        opaque_reason(m) is None and not parametrize.is_parametrized(m) for m in module.modules()
    )


def _closed(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` reads nothing but its arguments and, for a module call, that module's
    own subtree: a built-in layer or a runtime module of a deployed model with no hook in its
    subtree, a function of torch, ``operator`` or ``math``, or a tensor method. A user's leaf
    or wrapped function may reach any module (one held in a plain list) and a rule could
    change that one unseen; ``x.data`` and ``x.numpy()`` are handles whose writes no version
    counter sees."""
    if node.op == "call_module":
        module = modules.get(str(node.target))
        return (
            module is not None
            and (is_trusted_leaf(module) or type(module).__module__ == "reparam.runtime")
            and _hook_free(module)
        )
    if node.op == "call_function":
        if node.target is getattr and len(node.args) > 1 and node.args[1] == "data":
            return False
        owner = getattr(node.target, "__module__", None) or ""
        return owner.split(".")[0] in _OWN_MODULES
    if node.op == "call_method":
        return node.target not in _ESCAPING_METHODS
    return True


def _global_hooks() -> bool:
    from torch.nn.modules import module as module_module

    return any(
        getattr(module_module, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def take_before(root: nn.Module, graph: fx.Graph) -> Before:
    """What :func:`changed_region` compares the rewritten scope with (call before rewriting).
    The states kept are those of the modules the graph calls and everything under them.
    Raises :class:`Unverifiable` for a graph that calls something whose reach is not known."""
    if _global_hooks():
        raise Unverifiable("a global module hook, whose reach is not known")
    modules = dict(root.named_modules(remove_duplicate=False))
    states: dict[int, tuple[Any, ...]] = {}
    attributes: dict[str, tuple[Any, Any]] = {}
    nodes = []
    for node in graph.nodes:
        if not _closed(node, modules):
            raise Unverifiable(f"'{node.name}', whose reach is not known")
        nodes.append(OldNode(node, node.op, node.target, node.args, node.kwargs))
        target = str(node.target)
        if node.op == "call_module" and target in modules:
            for m in modules[target].modules():
                if id(m) not in states:
                    states[id(m)] = _state(m)
        elif node.op == "get_attr" and target not in attributes:
            try:
                obj = _attribute(root, target)
            except AttributeError:
                continue  # read nothing: the region will not run, the whole scope is checked
            attributes[target] = (obj, _tensor_state(obj))
    return Before(nodes, modules, states, attributes)


@dataclass
class Region:
    """The nodes of the rewrites' region before and after, and the recorded values of the
    unchanged nodes they read."""

    old: list[OldNode]  # G0's region, in graph order
    new: list[OldNode]  # G1's region, in graph order (as they are now)
    inputs: dict[fx.Node, Any]  # unchanged node -> its recorded value
    old_modules: list[nn.Module]  # what G0's region calls, as they were
    new_modules: list[nn.Module]  # what G1's region calls
    old_attributes: dict[str, Any]  # get_attr target -> what G0 read


def _same(a: Any, b: Any) -> bool:
    """Same arguments: nodes and tensors by identity, containers item by item, the rest by
    type and value."""
    if a is b:
        return True
    if isinstance(a, (tuple, list)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (fx.Node, torch.Tensor, nn.Module)) or type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - not comparable: not known to be the same
        return False


def _input_nodes(old: OldNode) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((old.args, old.kwargs), found.append)
    return found


def _changed_paths(before: Before, now: dict[str, nn.Module]) -> tuple[set[str], set[str]]:
    """The paths whose module is not the same object as before, or not in the same state (for
    the modules whose state was kept), and every path at or above one of them."""
    changed = {
        path
        for path, m in before.modules.items()
        if now.get(path) is not m
        or (id(m) in before.states and not _same_state(before.states[id(m)], _state(m)))
    } | (now.keys() - before.modules.keys())
    dirty = set(changed)
    for path in changed:
        while path:
            path = path.rpartition(".")[0]
            dirty.add(path)
    return changed, dirty


def changed_region(
    before: Before,
    graph: fx.Graph,
    root: nn.Module,
    values: dict[fx.Node, Any],
    versions: dict[fx.Node, tuple[int, ...]],
) -> Region | str:
    """The region of the rewrites between ``before`` and ``graph`` (see the module
    docstring), or why the whole scope must be checked instead. ``values`` and ``versions``
    are the capture's: what each node computed, and its tensors' version counters then."""
    try:
        return _changed_region(before, graph, root, values, versions)
    except Unverifiable as exc:
        return f"the region cannot vouch for {exc}"


def _changed_region(
    before: Before,
    graph: fx.Graph,
    root: nn.Module,
    values: dict[fx.Node, Any],
    versions: dict[fx.Node, tuple[int, ...]],
) -> Region | str:
    now = dict(root.named_modules(remove_duplicate=False))
    changed_paths, dirty_paths = _changed_paths(before, now)

    def reads_as_before(node: fx.Node) -> bool:
        target = str(node.target)
        if node.op == "call_module":
            return target != "" and target not in dirty_paths and target in before.modules
        if node.op == "get_attr":
            known = before.attributes.get(target)
            try:
                current = _attribute(root, target)
            except AttributeError:
                return False
            return known is not None and current is known[0] and _tensor_state(current) == known[1]
        return True

    old_of = {old.node: old for old in before.nodes}
    unchanged: set[fx.Node] = set()
    current: list[OldNode] = []
    for node in graph.nodes:
        now_node = OldNode(node, node.op, node.target, node.args, node.kwargs)
        current.append(now_node)
        old = old_of.get(node)
        if (
            old is not None
            and node.op != "output"
            and old.op == node.op
            and _same(old.target, node.target)
            and _same(old.args, node.args)
            and _same(old.kwargs, node.kwargs)
            and all(n in unchanged for n in node.all_input_nodes)
            and reads_as_before(node)
        ):
            unchanged.add(node)
    # the nodes kept run in the order they ran (moving one across an in-place write would
    # change what it reads)
    kept = {o.node for o in current} & old_of.keys()
    if [o.node for o in before.nodes if o.node in kept] != [
        o.node for o in current if o.node in kept
    ]:
        return "the rewrites moved nodes"
    old_region = [o for o in before.nodes if o.node not in unchanged]
    new_region = [o for o in current if o.node not in unchanged]
    if any(o.op == "placeholder" for o in (*old_region, *new_region)):
        return "an input of the graph changed"
    inputs: dict[fx.Node, Any] = {}
    for o in (*old_region, *new_region):
        for n in _input_nodes(o):
            if n in unchanged and n not in inputs:
                if n not in values:
                    return f"no recorded value of '{n.name}'"
                now = tensor_versions(values[n])
                if now != versions.get(n) or UNKNOWN in now:
                    return f"'{n.name}' was written in place after it was computed, or may be"
                inputs[n] = values[n]
    # a module that changed is reached only through the region's nodes (else an unchanged
    # node could reach it some other way: an opaque module holding it in a plain list)
    reached = {
        str(o.target) if o.op == "call_module" else str(o.target).rpartition(".")[0]
        for o in (*old_region, *new_region)
        if o.op in ("call_module", "get_attr")
    }
    for path in changed_paths:
        if path and not any(
            path == t or path.startswith(t + ".") or t.startswith(path + ".") for t in reached
        ):
            return f"'{path}' changed, but no node of the region calls it"
    old_modules: dict[int, nn.Module] = {}
    old_attributes: dict[str, Any] = {}
    for o in old_region:
        target = str(o.target)
        if o.op == "get_attr":
            known = before.attributes.get(target)
            if known is None or _tensor_state(known[0]) != known[1]:
                return f"'{target}' was not read before or was written since"
            old_attributes[target] = known[0]
        elif o.op == "call_module":
            module = before.modules.get(target)
            if module is None:
                return f"'{target}' was not a module before"
            for m in module.modules():  # each as it was: not changed in place by a rewrite
                if not _same_state(before.states.get(id(m)), _state(m)):
                    return f"'{target}' was changed in place"
                old_modules.setdefault(id(m), m)
    new_modules: dict[int, nn.Module] = {}
    for o in new_region:
        if o.op == "call_module":
            for m in root.get_submodule(str(o.target)).modules():
                new_modules.setdefault(id(m), m)
    return Region(
        old_region,
        new_region,
        inputs,
        list(old_modules.values()),
        list(new_modules.values()),
        old_attributes,
    )


def _run(nodes: list[OldNode], inputs: dict[fx.Node, Any], call: Any, read: Any) -> Any:
    """Interpret ``nodes`` (in order, ending in the output) on ``inputs``."""
    env: dict[fx.Node, Any] = {k: _map_tensors(v, _to_double) for k, v in inputs.items()}
    given = {k: (env[k], tensor_versions(env[k])) for k in inputs}
    value = env.__getitem__
    for o in nodes:
        args = fx.node.map_arg(o.args, value)
        kwargs = fx.node.map_arg(o.kwargs, value)
        if o.op == "output":
            # a region that writes into one of its inputs may change what an unchanged node
            # reading that input computes: not shown here
            if any(tensor_versions(v) != known for v, known in given.values()):
                raise RegionWroteItsInput
            return args[0]
        if o.op == "get_attr":
            result = read(str(o.target))
        elif o.op == "call_module":
            result = call(str(o.target))(*args, **kwargs)
        elif o.op == "call_function":
            result = o.target(*args, **kwargs)
        elif o.op == "call_method":
            result = getattr(args[0], o.target)(*args[1:], **kwargs)
        else:
            raise RuntimeError(f"a {o.op} node '{o.node.name}' in a region")
        env[o.node] = result
    raise RuntimeError("a region without an output")


class RegionWroteItsInput(Exception):
    """A region wrote into a value it was given."""


def _with_tensors(also: Places, objects: Any) -> Places:
    extra = {id(t): (t, []) for t in objects if isinstance(t, torch.Tensor)}
    return Places({**also.by_id, **extra}) if extra else also


def region_error(region: Region, before: Before, root: nn.Module, also: Places) -> float | None:
    """The largest relative error between the region before and after, in float64 on the
    recorded values reaching it; None where either does not run (the caller then checks the
    whole scope, which reports what broke)."""
    try:
        with torch.no_grad(), float64_default():
            old_also = _with_tensors(also, region.old_attributes.values())
            with float64_reads(*region.old_modules, also=old_also):
                reference = _run(
                    region.old,
                    region.inputs,
                    before.modules.__getitem__,
                    region.old_attributes.__getitem__,
                )
            with float64_reads(*region.new_modules, also=also):
                candidate = _run(
                    region.new,
                    region.inputs,
                    root.get_submodule,
                    lambda target: _attribute(root, target),
                )
        return relative_error(reference, candidate)
    except Exception:  # noqa: BLE001 - the whole-scope check says what is wrong
        return None


__all__ = ["Before", "Region", "Unverifiable", "changed_region", "region_error", "take_before"]

"""The part of a scope's graph its rewrites changed, run before and after on recorded values.

A scope's check compares the rewritten forward with the forward it replaced. When a parent
merges two nodes at its end (a norm folded into the head of a whole network), running both
forwards whole repeats every unchanged node twice in float64 for nothing. The *region* of a
scope's rewrites is what differs between the graph before (``G0``) and after (``G1``):

- a node of ``G1`` is *unchanged* when ``G0`` has a node of the same name, op, target and
  arguments, every input of it is unchanged, and what it reads is what it read before: at a
  ``call_module`` target and every path under it the same module objects, each with the same
  attribute, parameter, buffer and child bindings and no tensor written in place; at a
  ``get_attr`` target the same object, not written in place;
- the region is every other node, in ``G0`` and in ``G1``; its inputs are unchanged nodes,
  whose values the capture's run already holds (the values the forward computed on the
  scope's recorded inputs).

:func:`region_error` runs ``G0``'s region with the modules as they were and ``G1``'s with the
modules as they are, both in float64 on those values, and compares the outputs. Unchanged
nodes compute the same function in both graphs, so the two forwards agree wherever their
regions agree on the values reaching them. It is the same kind of evidence as a scope's
check (the forward is compared on the values it received, cast to float64), one level down:
the reference is the scope as it was before its own rewrites, its children already deployed
and checked against the untouched model.

Anything the region cannot show is reported by :func:`changed_region` returning a reason, and
the caller checks the whole scope instead: a value the capture did not hold, a node with
several values (a scope called with more than one input pattern), a module changed in place,
or no output in the region.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from reparam.float64_run import Places, float64_reads
from reparam.verify import _map_tensors, _to_double, float64_default, relative_error

_TABLES = ("_parameters", "_buffers", "_modules")


_INTEGER_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _fingerprint(t: torch.Tensor) -> tuple[Any, ...]:
    """The tensor's version counter and the sum of its elements' bits read as integers: a
    write through ``.data`` leaves the version as it was but changes the sum."""
    if t.device.type == "meta" or t.element_size() not in _INTEGER_VIEWS or t.numel() == 0:
        return (t._version,)
    flat = t.detach().reshape(-1)
    bits = int(flat.view(_INTEGER_VIEWS[t.element_size()]).sum(dtype=torch.int64))
    return t._version, bits


def _state(m: nn.Module) -> tuple[Any, ...]:
    """What a module computes with, by identity: every attribute binding, every parameter,
    buffer and child binding, and a fingerprint of each tensor it holds."""
    bindings = tuple((k, id(v)) for k, v in m.__dict__.items() if k not in _TABLES)
    tables = tuple(tuple((k, id(v)) for k, v in getattr(m, t).items()) for t in _TABLES)
    tensors = tuple(
        _fingerprint(t)
        for t in (*m._parameters.values(), *m._buffers.values(), *m.__dict__.values())
        if isinstance(t, torch.Tensor)
    )
    return bindings, tables, tensors


def _version(value: Any) -> int | None:
    return value._version if isinstance(value, torch.Tensor) else None


def _attribute(root: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)


@dataclass
class Before:
    """A scope as it was before its rewrites: its graph (a copy), its modules by path with
    their states, and what each ``get_attr`` of the graph read."""

    graph: fx.Graph
    modules: dict[str, nn.Module]
    states: dict[int, tuple[Any, ...]]  # id(module) -> _state before
    attributes: dict[str, tuple[Any, int | None]]  # get_attr target -> (object, version)


def take_before(root: nn.Module, graph: fx.Graph) -> Before:
    """What :func:`changed_region` compares the rewritten scope with (call before rewriting)."""
    modules = dict(root.named_modules(remove_duplicate=False))
    states = {id(m): _state(m) for m in modules.values()}
    attributes: dict[str, tuple[Any, int | None]] = {}
    for node in graph.nodes:
        if node.op == "get_attr" and str(node.target) not in attributes:
            try:
                obj = _attribute(root, str(node.target))
            except AttributeError:
                continue  # read nothing: the region will not run, the whole scope is checked
            attributes[str(node.target)] = (obj, _version(obj))
    return Before(copy.deepcopy(graph), modules, states, attributes)


@dataclass
class Region:
    """The nodes of the rewrites' region before and after, and the recorded values of the
    unchanged nodes they read."""

    old: list[fx.Node]  # G0's region, in graph order
    new: list[fx.Node]  # G1's region, in graph order
    inputs: dict[str, Any]  # unchanged node's name -> its recorded value
    old_modules: list[nn.Module]  # what G0's region calls, as they were
    new_modules: list[nn.Module]  # what G1's region calls
    old_attributes: dict[str, Any]  # get_attr target -> what G0 read


def _names(value: Any) -> Any:
    return fx.node.map_arg(value, lambda n: ("node", n.name))


def _dirty_paths(before: Before, now: dict[str, nn.Module]) -> set[str]:
    """Every path at or above a module that is not the same, in the same state, as before."""
    changed = {
        path
        for path, m in before.modules.items()
        if now.get(path) is not m or _state(m) != before.states[id(m)]
    } | (now.keys() - before.modules.keys())
    dirty = set(changed)
    for path in changed:
        while path:
            path = path.rpartition(".")[0]
            dirty.add(path)
    return dirty


def changed_region(
    before: Before, graph: fx.Graph, root: nn.Module, values: dict[fx.Node, Any]
) -> Region | str:
    """The region of the rewrites between ``before.graph`` and ``graph`` (see the module
    docstring), or why the whole scope must be checked instead."""
    now = dict(root.named_modules(remove_duplicate=False))
    dirty_paths = _dirty_paths(before, now)

    def reads_as_before(node: fx.Node) -> bool:
        target = str(node.target)
        if node.op == "call_module":
            return target != "" and target not in dirty_paths
        if node.op == "get_attr":
            known = before.attributes.get(target)
            try:
                current = _attribute(root, target)
            except AttributeError:
                return False
            return known is not None and current is known[0] and _version(current) == known[1]
        return True

    old_by_name = {n.name: n for n in before.graph.nodes}
    unchanged: set[str] = set()
    for node in graph.nodes:
        old = old_by_name.get(node.name)
        if (
            old is not None
            and node.op != "output"
            and old.op == node.op
            and old.target == node.target
            and all(n.name in unchanged for n in node.all_input_nodes)
            and _names(old.args) == _names(node.args)
            and _names(old.kwargs) == _names(node.kwargs)
            and reads_as_before(node)
        ):
            unchanged.add(node.name)
    old_region = [n for n in before.graph.nodes if n.name not in unchanged]
    new_region = [n for n in graph.nodes if n.name not in unchanged]
    if any(n.op == "placeholder" for n in (*old_region, *new_region)):
        return "an input of the graph changed"
    by_name = {n.name: n for n in graph.nodes}
    inputs: dict[str, Any] = {}
    for node in (*old_region, *new_region):
        for n in node.all_input_nodes:
            if n.name in unchanged and n.name not in inputs:
                live = by_name[n.name]
                if live not in values:
                    return f"no recorded value of '{n.name}'"
                inputs[n.name] = values[live]
    old_modules: dict[int, nn.Module] = {}
    old_attributes: dict[str, Any] = {}
    for node in old_region:
        target = str(node.target)
        if node.op == "get_attr":
            known = before.attributes.get(target)
            if known is None or _version(known[0]) != known[1]:
                return f"'{target}' was not read before or was written since"
            old_attributes[target] = known[0]
        elif node.op == "call_module":
            module = before.modules.get(target)
            if module is None:
                return f"'{target}' was not a module before"
            for m in module.modules():  # each as it was: not changed in place by a rewrite
                if before.states.get(id(m)) != _state(m):
                    return f"'{target}' was changed in place"
                old_modules.setdefault(id(m), m)
    new_modules: dict[int, nn.Module] = {}
    for node in new_region:
        if node.op == "call_module":
            for m in root.get_submodule(str(node.target)).modules():
                new_modules.setdefault(id(m), m)
    return Region(
        old_region,
        new_region,
        inputs,
        list(old_modules.values()),
        list(new_modules.values()),
        old_attributes,
    )


def _run(nodes: list[fx.Node], inputs: dict[str, Any], call: Any, read: Any) -> Any:
    """Interpret ``nodes`` (in order, ending in the output) on ``inputs``."""
    env: dict[str, Any] = {k: _map_tensors(v, _to_double) for k, v in inputs.items()}

    def value(n: fx.Node) -> Any:
        return env[n.name]

    for node in nodes:
        args = fx.node.map_arg(node.args, value)
        kwargs = fx.node.map_arg(node.kwargs, value)
        if node.op == "output":
            return args[0]
        if node.op == "get_attr":
            result = read(str(node.target))
        elif node.op == "call_module":
            result = call(str(node.target))(*args, **kwargs)
        elif node.op == "call_function":
            result = node.target(*args, **kwargs)
        elif node.op == "call_method":
            result = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            raise RuntimeError(f"a {node.op} node '{node.name}' in a region")
        env[node.name] = result
    raise RuntimeError("a region without an output")


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


__all__ = ["Before", "Region", "changed_region", "region_error", "take_before"]

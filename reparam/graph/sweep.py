"""After a scope's rewrite: delete the attributes its new forward no longer reads.

The rewritten graph names the submodules, parameters and buffers it uses; whatever the old
graph used and the new one does not (a folded norm, the branches of a merged block) is
deleted, unless something else still needs it: a module shared by two paths, a module that a
caller outside this scope uses (pinned), or a parent that still holds other live children.
A norm emptied of its statistics but still holding children the new forward calls (timm's
``BatchNormAct2d`` with its activation) becomes a :class:`~reparam.runtime.FoldedNorm`
holder; a module left with nothing is removed.

Every edit of a module's attribute tables goes through :func:`set_attribute`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx as fx
from torch import nn

from reparam.runtime import FoldedNorm


def referenced(graph: fx.Graph) -> set[str]:
    """The attribute paths a graph reads (``call_module`` and ``get_attr`` targets)."""
    return {str(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")}


def set_attribute(owner: nn.Module, name: str, value: object | None) -> None:
    """Set (or, with None, delete) ``owner.name``: a submodule, parameter or buffer. An entry
    of a ``ParameterDict`` is deleted through the dict, so its own key list stays true."""
    if value is None:
        if isinstance(owner, nn.ParameterDict) and name in owner:
            del owner[name]
            return
        for table in (owner._modules, owner._parameters, owner._buffers):
            if name in table:
                del table[name]
                return
        return
    setattr(owner, name, value)


def _own_copy(root: nn.Module, path: str) -> nn.Module:
    """Replace the module at ``path`` by a shallow copy with its own attribute tables: edits
    then never reach the original object, which anything else holding it still runs."""
    module = root.get_submodule(path)
    clone = type(module).__new__(type(module))
    clone.__dict__.update(module.__dict__)
    for table in ("_parameters", "_buffers", "_modules", "_keys"):  # _keys: ParameterDict's
        if table in module.__dict__:
            clone.__dict__[table] = dict(module.__dict__[table])
    parent_path, _, name = path.rpartition(".")
    set_attribute(root.get_submodule(parent_path) if parent_path else root, name, clone)
    return clone


def _retire_emptied_norm(root: nn.Module, path: str) -> None:
    if not path:
        return
    module = root.get_submodule(path)
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return
    if "weight" in module._parameters or module._buffers.get("running_mean") is not None:
        return
    holder = FoldedNorm(module)
    holder.train(module.training)
    parent_path, _, name = path.rpartition(".")
    set_attribute(root.get_submodule(parent_path) if parent_path else root, name, holder)


def _prune_empty(root: nn.Module, path: str, live: set[str], shared: frozenset[int]) -> None:
    while path:
        module = root.get_submodule(path)
        if (
            module._modules
            or any(v is not None for v in module._parameters.values())
            or any(v is not None for v in module._buffers.values())
            or id(module) in shared
            or any(a == path or a.startswith(path + ".") for a in live)
        ):
            return
        parent_path, _, name = path.rpartition(".")
        set_attribute(root.get_submodule(parent_path) if parent_path else root, name, None)
        path = parent_path


def delete_dead(
    root: nn.Module,
    graph: fx.Graph,
    used_before: set[str],
    *,
    shared: frozenset[int],
    pinned: Iterable[str],
) -> None:
    """Delete from ``root`` what ``used_before`` named and ``graph`` no longer reads."""
    live = referenced(graph)
    pinned = tuple(pinned)
    for target in sorted(used_before - live, key=lambda t: -t.count(".")):
        if any(a == target or a.startswith(target + ".") for a in live):
            continue
        if any(target == p or target.startswith(p + ".") for p in pinned):
            continue
        parent_path, _, name = target.rpartition(".")
        try:
            parent = root.get_submodule(parent_path) if parent_path else root
        except AttributeError:
            continue
        obj = getattr(parent, name, None)
        if obj is None or id(obj) in shared:
            continue
        if isinstance(parent, nn.ParameterList):
            continue  # entries are found by position: taking one out would renumber the rest
        if parent_path and id(parent) not in shared:
            parent = _own_copy(root, parent_path)
        set_attribute(parent, name, None)
        _retire_emptied_norm(root, parent_path)
        _prune_empty(root, parent_path, live, shared)

"""Writes into a model's parameters and buffers that a trace cannot see.

A forward that writes module state with values the tracer does not follow (``self.calls += 1``
on a buffer, ``self.stats.usage.add_(1)`` on a sibling it holds without registering it) runs
that write for real while it is traced, and leaves no node in the graph: the rewritten forward
would silently drop it. A capture takes a :class:`Snapshot` of the tensors its forward can
write — every parameter and buffer of the traced module, and each one elsewhere in the model
that the forward reads as a module attribute (``self.stats.usage``) — with its binding and
version counter, and asks afterwards what changed. The comparison runs at C speed (``map``
over flat lists); only a change is looked at entry by entry.

:class:`StateWatch` also indexes where a whole model holds each tensor
(:class:`reparam.float64_run.Places`), so a float64 check can read any of them as a copy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reparam.float64_run import Places

_version = operator.attrgetter("_version")


@dataclass(frozen=True)
class _Entry:
    path: str | None  # the owning module's path below the traced module (None: elsewhere)
    module: nn.Module
    name: str
    is_parameter: bool
    tensor: torch.Tensor


def _python_modules(root: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``root``'s modules but TorchScript ones and theirs (their tables are views rebuilt on
    every read, and no trace runs their code)."""
    found, scripted = [], []
    for path, m in root.named_modules(prefix=prefix):
        if any(path == p or path.startswith(p + ".") for p in scripted):
            continue
        if isinstance(m, torch.jit.ScriptModule):
            scripted.append(path)
            continue
        found.append((path, m))
    return found


def _entries_of(path: str | None, m: nn.Module) -> list[_Entry]:
    return [
        _Entry(path, m, name, is_parameter, t)
        for is_parameter, table in ((True, m._parameters), (False, m._buffers))
        for name, t in table.items()
        if t is not None
    ]


def attribute_entry(module: nn.Module, name: str, value: object) -> _Entry | None:
    """The entry for ``module.name`` when it is a parameter or buffer holding ``value``."""
    if module._parameters.get(name) is value and value is not None:
        return _Entry(None, module, name, True, value)  # type: ignore[arg-type]
    if module._buffers.get(name) is value and value is not None:
        return _Entry(None, module, name, False, value)  # type: ignore[arg-type]
    return None


class Snapshot:
    """The bindings and version counters of some parameters and buffers at one moment."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self._tables = [e.module._parameters if e.is_parameter else e.module._buffers
                        for e in entries]
        self._names = [e.name for e in entries]
        self._tensors = [e.tensor for e in entries]
        self._versions = list(map(_version, self._tensors))

    @classmethod
    def of(cls, module: nn.Module) -> Snapshot:
        """Every parameter and buffer of ``module`` and its submodules."""
        return cls([e for path, m in _python_modules(module) for e in _entries_of(path, m)])

    def extend(self, entries: list[_Entry]) -> None:
        """More entries, their versions as of now."""
        self.entries = self.entries + entries
        for e in entries:
            self._tables.append(e.module._parameters if e.is_parameter else e.module._buffers)
            self._names.append(e.name)
            self._tensors.append(e.tensor)
            self._versions.append(e.tensor._version)

    def again(self) -> Snapshot:
        """The same tensors, their versions as of now."""
        return Snapshot(self.entries)

    def changed(self) -> list[int]:
        """Indices of the entries rebound, removed or written in place since."""
        bound = list(map(dict.get, self._tables, self._names))
        versions = list(map(_version, self._tensors))
        if all(map(operator.is_, bound, self._tensors)) and versions == self._versions:
            return []
        return [
            i
            for i, (now, then, v, w) in enumerate(
                zip(bound, self._tensors, versions, self._versions, strict=True)
            )
            if now is not then or v != w
        ]

    def put_back(self, indices: list[int]) -> None:
        """The entries at ``indices`` bound to their tensors again, in their own tables (a
        value written in place stays written)."""
        for i in indices:
            e = self.entries[i]
            own, other = (
                (e.module._parameters, e.module._buffers)
                if e.is_parameter
                else (e.module._buffers, e.module._parameters)
            )
            other.pop(e.name, None)  # a parameter the forward re-made as a buffer, or back
            if own.get(e.name) is not e.tensor:
                own[e.name] = e.tensor


def state_writes(
    snapshot: Snapshot,
    changed: list[int],
    ran_for_real: Callable[[str], bool],
    excused: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """The changed entries named as the traced forward reads them. Left out: those inside a
    leaf that ran for real (``ran_for_real(path)``), and the ``excused`` indices that such a
    leaf wrote elsewhere: a leaf stays a call, its writes with it."""
    found = []
    for i in changed:
        if i in excused:
            continue
        e = snapshot.entries[i]
        if e.path is None:
            found.append(f"{type(e.module).__name__}.{e.name} (held elsewhere in the model)")
        elif e.path and ran_for_real(e.path):
            continue
        else:
            found.append(f"{e.path}.{e.name}" if e.path else f"self.{e.name}")
    return found


class StateWatch:
    """Where a model holds each of its parameters and buffers, by tensor (for float64 checks
    that must read every one of them as a copy). :meth:`refresh` the modules at and below a
    path after changing them on purpose."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self._groups: dict[str, list[tuple[int, dict, str]]] | None = None  # path -> places
        self._by_id: dict[int, tuple[torch.Tensor, list[tuple[dict, str]]]] = {}

    def _add(self, path: str, m: nn.Module) -> None:
        held = []
        for table in (m._parameters, m._buffers):
            for name, t in table.items():
                if t is not None:
                    self._by_id.setdefault(id(t), (t, []))[1].append((table, name))
                    held.append((id(t), table, name))
        self._groups[path] = held  # type: ignore[index]

    def refresh(self, under: str = "") -> None:
        """Relist the modules at and below ``under`` ("" for all)."""
        if self._groups is None:
            return
        if not under:
            self._groups, self._by_id = None, {}
            return
        prefix = under + "."
        for path in [p for p in self._groups if p == under or p.startswith(prefix)]:
            for key, table, name in self._groups.pop(path):
                tensor, places = self._by_id[key]
                places[:] = [(t, n) for t, n in places if not (t is table and n == name)]
                if not places:  # held nowhere else (a tensor shared elsewhere stays listed)
                    del self._by_id[key]
        for path, m in _python_modules(self.root.get_submodule(under), prefix=under):
            self._add(path, m)

    def places(self) -> Places:
        if self._groups is None:
            self._groups = {}
            for path, m in _python_modules(self.root):
                self._add(path, m)
        return Places(self._by_id)

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
from typing import Any

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
    tensor: torch.Tensor | None

    @property
    def table(self) -> dict[str, Any]:
        """The module's table this entry lives in (``_parameters`` or ``_buffers``)."""
        return self.module._parameters if self.is_parameter else self.module._buffers

    @property
    def other_table(self) -> dict[str, Any]:
        return self.module._buffers if self.is_parameter else self.module._parameters


def _named(path: str, name: str) -> str:
    """``path.name`` as the traced forward reads it (``self.name`` for its own)."""
    return f"{path}.{name}" if path else f"self.{name}"


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
    ]


def attribute_entry(module: nn.Module, name: str, value: object) -> _Entry | None:
    """The entry for ``module.name`` when it is a parameter or buffer holding ``value``."""
    if module._parameters.get(name) is value and value is not None:
        return _Entry(None, module, name, True, value)  # type: ignore[arg-type]
    if module._buffers.get(name) is value and value is not None:
        return _Entry(None, module, name, False, value)  # type: ignore[arg-type]
    return None


def _versions(tensors: list) -> list[int]:
    """Each tensor's version counter (-1 for ``None``). Not ``None in tensors``: that compares
    every tensor with ``==``, a torch call each (85 ms for 3,000 tensors)."""
    try:
        return list(map(_version, tensors))
    except AttributeError:
        return [t._version if t is not None else -1 for t in tensors]


class Snapshot:
    """The bindings and version counters of some parameters and buffers at one moment, and
    the names each watched module's tables hold (a forward that registers a new one, or fills
    a ``None`` one, changed them too)."""

    def __init__(
        self,
        entries: list[_Entry],
        modules: list[tuple[str, nn.Module]] = (),
        plain: list[tuple[str, str, torch.Tensor]] = (),
    ) -> None:
        self.entries = entries
        self._tables = [e.table for e in entries]
        self._names = [e.name for e in entries]
        self._bound = list(map(dict.get, self._tables, self._names))  # the baseline
        self._versions = _versions(self._bound)
        self._modules = list(modules)
        self._sizes = [(len(m._parameters), len(m._buffers)) for _, m in self._modules]
        self._excused: set[tuple[int, bool, str]] = set()  # names a user's leaf registered
        # plain tensor attributes (``self.steps = torch.zeros(())``): their versions
        self.plain = list(plain)
        self._plain_versions = [t._version for _, _, t in self.plain]

    @classmethod
    def of(cls, module: nn.Module) -> Snapshot:
        """Every parameter and buffer of ``module`` and its submodules."""
        modules = _python_modules(module)
        plain = [
            (path, name, value)
            for path, m in modules
            for name, value in m.__dict__.items()
            if isinstance(value, torch.Tensor)
        ]
        return cls([e for path, m in modules for e in _entries_of(path, m)], modules, plain)

    def plain_written(self) -> list[tuple[str, str]]:
        """The plain tensor attributes written in place since, as (path, name)."""
        return [
            (path, name)
            for (path, name, t), version in zip(self.plain, self._plain_versions, strict=True)
            if t._version != version
        ]

    def extend(self, entries: list[_Entry]) -> None:
        """More entries, their versions as of now."""
        self.entries = self.entries + entries
        for e in entries:
            table = e.table
            self._tables.append(table)
            self._names.append(e.name)
            bound = table.get(e.name)
            self._bound.append(bound)
            self._versions.append(bound._version if bound is not None else -1)

    def again(self) -> Snapshot:
        """The same places, as they are now."""
        return Snapshot(self.entries, self._modules)

    def changed(self) -> list[int]:
        """Indices of the entries rebound, removed or written in place since the baseline."""
        bound = list(map(dict.get, self._tables, self._names))
        if all(map(operator.is_, bound, self._bound)) and _versions(bound) == self._versions:
            return []
        versions = _versions(bound)
        return [
            i
            for i, (now, then, v, w) in enumerate(
                zip(bound, self._bound, versions, self._versions, strict=True)
            )
            if now is not then or v != w
        ]

    def absorb(self, before: Snapshot, names_before: set[tuple[int, bool, str]]) -> None:
        """Take into the baseline what changed since ``before`` and ``names_before`` (taken,
        with :meth:`again` and :meth:`name_keys`, when a user's leaf began its real run: the
        leaf's own effects): a write the traced forward made before or makes after it still
        counts."""
        now = before.again()
        for i in before.changed():
            untouched_before = (
                self._bound[i] is before._bound[i] and self._versions[i] == before._versions[i]
            )
            if untouched_before:  # the leaf's change alone: the new baseline
                self._bound[i], self._versions[i] = now._bound[i], now._versions[i]
            elif self._bound[i] is before._bound[i] is now._bound[i]:
                # the traced forward wrote it before: keep that difference, drop the leaf's
                self._versions[i] += now._versions[i] - before._versions[i]
        self._excused |= self.name_keys() - names_before

    def name_keys(self) -> set[tuple[int, bool, str]]:
        """The names registered in watched modules since the baseline, as keys."""
        return {(id(m), is_parameter, name) for _, m, is_parameter, name in self._new_names()}

    def _new_names(self) -> list[tuple[str, nn.Module, bool, str]]:
        sizes = [(len(m._parameters), len(m._buffers)) for _, m in self._modules]
        if sizes == self._sizes:
            return []
        known = {(id(e.module), e.is_parameter, e.name) for e in self.entries}
        return [
            (path, m, is_parameter, name)
            for path, m in self._modules
            for is_parameter, table in ((True, m._parameters), (False, m._buffers))
            for name in table
            if (id(m), is_parameter, name) not in known
        ]

    def new_names(self) -> list[tuple[str, nn.Module, bool, str]]:
        """Names registered in a watched module's tables since the baseline (by the traced
        forward: not those a user's leaf registered)."""
        return [
            (path, m, is_parameter, name)
            for path, m, is_parameter, name in self._new_names()
            if (id(m), is_parameter, name) not in self._excused
        ]

    def put_back(self) -> None:
        """Every entry bound to the tensor it held when listed, in its own table (a value
        written in place stays written), and names registered since removed: a trace leaves
        no binding behind, the traced forward's or a leaf's."""
        bound = list(map(dict.get, self._tables, self._names))
        originals = [e.tensor for e in self.entries]
        if all(map(operator.is_, bound, originals)) and not self._new_names():
            return
        for e, now in zip(self.entries, bound, strict=True):
            own, other = e.table, e.other_table
            if now is not e.tensor or e.name in other or e.name not in own:
                other.pop(e.name, None)  # a parameter the forward re-made as a buffer
                own[e.name] = e.tensor
        for _, m, is_parameter, name in self._new_names():
            (m._parameters if is_parameter else m._buffers).pop(name, None)


def state_writes(
    snapshot: Snapshot, changed: list[int], ran_for_real: Callable[[str], bool]
) -> list[str]:
    """The changed entries, and the names registered since, as the traced forward reads
    them. Left out: those inside a leaf that ran for real (``ran_for_real(path)``); what a
    user's leaf wrote elsewhere is in the baseline already (:meth:`Snapshot.absorb`)."""
    found = []
    for i in changed:
        e = snapshot.entries[i]
        if e.path is None:
            found.append(f"{type(e.module).__name__}.{e.name} (held elsewhere in the model)")
        elif e.path and ran_for_real(e.path):
            continue
        else:
            found.append(_named(e.path, e.name))
    for path, _, _, name in snapshot.new_names():
        if not (path and ran_for_real(path)):
            found.append(_named(path, name))
    for path, name in snapshot.plain_written():
        if not (path and ran_for_real(path)):
            found.append(_named(path, name))
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
                    places = self._by_id.setdefault(id(t), (t, []))[1]
                    if not any(tb is table and n == name for tb, n in places):
                        places.append((table, name))  # a module at two paths: listed once
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
                listed = self._by_id.get(key)
                if listed is None:  # a module at two paths: its other path removed it
                    continue
                places = listed[1]
                places[:] = [(t, n) for t, n in places if not (t is table and n == name)]
                if not places:
                    del self._by_id[key]
        for path, m in _python_modules(self.root.get_submodule(under), prefix=under):
            self._add(path, m)

    def places(self) -> Places:
        if self._groups is None:
            self._groups = {}
            for path, m in _python_modules(self.root):
                self._add(path, m)
        return Places(self._by_id)

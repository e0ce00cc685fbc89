"""Run a module in float64 without a float64 copy of it.

``module.double()`` (or a float64 deep copy) holds every weight twice over for the whole run:
for a check of a whole model that is two extra copies of its parameters at the peak. Instead,
:class:`float64_reads` is a :class:`torch.overrides.TorchFunctionMode` that hands every torch
call the module's own parameters and buffers as copies: floating ones cast to float64, the
others (integer counters, float64 tensors) cloned. A copy lives as long as the call that reads
it, plus a small cache of recent ones (``cache_bytes``, so a forward that reads a weight row by
row does not copy it whole for every row): the peak is about one layer's weights in float64,
not the model's.

What a forward sees is what it would see in a float64 copy:

- every torch function, tensor method and ``nn.functional`` call that reads an owned tensor
  gets its float64 value;
- ``tensor.dtype`` of an owned floating tensor is ``torch.float64``; shape, device and the
  other metadata read the tensor itself (no copy);
- a write into an owned tensor (an in-place method, ``out=``, ``x[i] = ...``, ``.data = ...``)
  goes to its copy, which every later read of that run then sees: the module's own tensors
  are never written and never handed to a forward;
- attributes a forward sets (``self.calls += 1`` rebinding a buffer, ``self.last = y``, an
  ``append`` to a list attribute) are put back when the run ends: the modules are as they
  were.

Known differences from a real float64 copy, none of which can make two modules that run the
same code under the mode disagree: a write through a view of an owned tensor that is no longer
cached (``self.b[:2].fill_(0)``) is not seen by later reads; ``element_size()`` and ``nbytes``
report the stored dtype's sizes; a TorchScript function called from Python receives the owned
tensors themselves; a float64 1×1 conv over one-pixel maps runs as a ``matmul``
(:mod:`reparam.float64_kernels`), which rounds in another order than the conv kernel (about
1e-16). TorchScript *modules* run C++ code the mode cannot see:
:func:`sees_whole_forward` says whether a module can be run this way (else the caller copies it
as before).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from reparam.float64_kernels import KERNELS

# tensor methods that read metadata only: the owned tensor itself answers, uncopied
_METADATA_METHODS = frozenset({
    "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "element_size", "get_device", "is_floating_point", "is_complex",
    "is_signed", "has_names", "__len__",
})
# properties that return the tensor's values (``x.data``, ``x.T``): cast like any read
_DATA_PROPERTIES = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})


def sees_whole_forward(module: nn.Module) -> bool:
    """Whether every part of ``module``'s forward runs through Python torch calls (no
    TorchScript submodule, whose weights the mode could not cast)."""
    return not any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())


@dataclass(frozen=True)
class Places:
    """Where a model holds its parameters and buffers: ``by_id[id(t)] == (t, [(table, name),
    ...])``, each table a module's ``_parameters`` or ``_buffers``
    (:meth:`reparam.graph.state_watch.StateWatch.places` lists a model's)."""

    by_id: Mapping[int, tuple[torch.Tensor, list[tuple[dict[str, Any], str]]]] = field(
        default_factory=dict
    )


NOWHERE = Places()


class float64_reads(TorchFunctionMode):  # noqa: N801 - used like a function
    """While active, torch calls read the parameters and buffers of ``modules`` as float64
    copies (see the module docstring). Use with :class:`reparam.verify.float64_default` and
    float64 inputs to run those modules as their float64 copies would run.

    ``also`` names more places of parameters and buffers that a forward can reach outside
    ``modules`` (a block may hold a sibling without registering it), e.g. every one of the
    whole model: what they hold when the run starts is read as copies too and put there again
    afterwards (other attributes of those modules are not put back).
    ``cache_bytes`` bounds the recent copies kept for reuse within one run."""

    def __init__(
        self,
        *modules: nn.Module,
        also: Places | None = None,
        cache_bytes: int = 16 * 2**20,
    ) -> None:
        super().__init__()
        self._modules = _distinct_modules(modules)
        self._also = also if also is not None else NOWHERE
        self._owned: dict[int, torch.Tensor] = {}
        for m in self._modules:  # parameters, buffers and plain tensor attributes
            for value in (*m._parameters.values(), *m._buffers.values(), *m.__dict__.values()):
                if isinstance(value, torch.Tensor):
                    self._owned[id(value)] = value
        self._read_elsewhere: set[int] = set()  # ids in ``also`` read (copied) this run
        self._cache_bytes = cache_bytes
        self._written: dict[int, torch.Tensor] = {}  # owned id -> its copy, written this run
        self._recent: OrderedDict[int, torch.Tensor] = OrderedDict()  # owned id -> its copy
        self._recent_bytes = 0
        self._saved: list[tuple[nn.Module, dict[str, Any], list[tuple[Any, Any]]]] = []

    def __enter__(self) -> float64_reads:
        self._saved = [_save(m) for m in self._modules]
        self._written, self._recent, self._read_elsewhere = {}, OrderedDict(), set()
        self._recent_bytes = 0
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for m, attributes, containers in self._saved:
            _put_back(m, attributes, containers)
        # a forward may have rebound a name elsewhere to the copy it was handed
        # (``self.stats.usage += 1``): each tensor read there is put back where it was held
        for key in self._read_elsewhere:
            tensor, places = self._also.by_id[key]
            for table, name in places:
                if table.get(name) is not tensor:
                    table[name] = tensor
        self._read_elsewhere = set()
        self._saved, self._written, self._recent = [], {}, OrderedDict()
        self._recent_bytes = 0

    def _read(self, t: torch.Tensor) -> torch.Tensor:
        key = id(t)
        copy = self._written.get(key)
        if copy is None:
            copy = self._recent.get(key)
        if copy is not None:
            return copy
        if t.is_floating_point() and t.dtype != torch.float64:
            copy = t.detach().to(torch.float64)
        else:
            copy = t.detach().clone()
        if copy.nbytes <= self._cache_bytes:
            self._recent[key] = copy
            self._recent_bytes += copy.nbytes
            while self._recent_bytes > self._cache_bytes:  # the oldest copies go first
                _, dropped = self._recent.popitem(last=False)
                self._recent_bytes -= dropped.nbytes
        return copy

    def _is_owned(self, value: object) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        key = id(value)
        if self._owned.get(key) is value:
            return True
        elsewhere = self._also.by_id.get(key)
        if elsewhere is not None and elsewhere[0] is value:
            self._read_elsewhere.add(key)
            return True
        return False

    def _cast(self, value: Any, casts: dict[int, torch.Tensor]) -> Any:
        if isinstance(value, torch.Tensor):
            if self._is_owned(value):
                key = id(value)
                cast = casts.get(key)
                if cast is None:
                    cast = casts[key] = self._read(value)
                return cast
            return value
        if isinstance(value, (list, tuple)) and value:
            items = [self._cast(v, casts) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items) if isinstance(value, list) else tuple(items)
        return value

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__"):
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            owner = args[0] if args else None
            owned = self._is_owned(owner)
            if not owned or (name == "__get__" and prop not in _DATA_PROPERTIES):
                if owned and prop == "dtype" and owner.is_floating_point():
                    return torch.float64
                return func(*args, **kwargs)
            copy = self._read(owner)
            if name == "__set__":  # x.data = v: the copy holds v for the rest of the run
                self._written[id(owner)] = copy
            return func(copy, *args[1:], **kwargs)
        if name in _METADATA_METHODS:
            return func(*args, **kwargs)
        casts: dict[int, torch.Tensor] = {}
        new_args = self._cast(args, casts)
        new_kwargs = (
            {k: self._cast(v, casts) for k, v in kwargs.items()} if kwargs else kwargs
        )
        kernel = KERNELS.get(func)
        if not casts:
            result = kernel(args, kwargs) if kernel is not None else None
            return func(*args, **kwargs) if result is None else result
        versions = {key: cast._version for key, cast in casts.items()}
        result = kernel(new_args, new_kwargs) if kernel is not None else None
        if result is None:
            result = func(*new_args, **new_kwargs)
        for key, cast in casts.items():
            if cast._version != versions[key]:  # written in place: later reads see it
                self._written[key] = cast
        return result


def _distinct_modules(roots: tuple[nn.Module, ...]) -> list[nn.Module]:
    seen: dict[int, nn.Module] = {}
    for root in roots:
        for m in root.modules():
            seen.setdefault(id(m), m)
    return list(seen.values())


_CONTAINERS = (list, dict, set)


def _save(m: nn.Module) -> tuple[nn.Module, dict[str, Any], list[tuple[Any, Any]]]:
    """``m``'s attributes, and a shallow copy of each list, dict and set among them (the
    parameter, buffer and child tables included), to put back after a run."""
    attributes = dict(m.__dict__)
    containers = [
        (value, value.copy()) for value in attributes.values() if isinstance(value, _CONTAINERS)
    ]
    return m, attributes, containers


def _put_back(m: nn.Module, attributes: dict[str, Any], containers: list[tuple[Any, Any]]) -> None:
    m.__dict__.clear()
    m.__dict__.update(attributes)
    for live, saved in containers:
        if isinstance(live, list):
            live[:] = saved
        else:
            live.clear()
            live.update(saved)

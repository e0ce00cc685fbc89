"""Run a module in float64 without a float64 copy of it.

``module.double()`` (or a float64 deep copy) holds every weight twice over for the whole run:
for a check of a whole model that is two extra copies of its parameters at the peak. Instead,
:class:`float64_reads` is a :class:`torch.overrides.TorchFunctionMode` that hands every torch
call the module's own floating parameters and buffers cast to float64: each cast lives only as
long as the call that reads it, so the peak is one layer's weights in float64, not the model's.

What a forward sees is what it would see in a float64 copy:

- every torch function, tensor method and ``nn.functional`` call that reads an owned tensor
  gets its float64 value (a fresh copy per call);
- ``tensor.dtype`` of an owned floating tensor is ``torch.float64``; shape, device and the
  other metadata read the tensor itself (no copy);
- a write into an owned tensor (an in-place method, ``out=``, ``x[i] = ...``, ``.data = ...``)
  goes to its float64 copy, which every later read of that run then sees: the module's own
  tensors are never written;
- attributes a forward sets (``self.calls += 1`` rebinding a buffer, ``self.last = y``) are
  put back when the run ends: the modules are as they were.

TorchScript modules run C++ code the mode cannot see: :func:`sees_whole_forward` says whether
a module can be run this way (else the caller copies it as before).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# tensor methods that read metadata only: the owned tensor itself answers, uncopied
_METADATA_METHODS = frozenset({
    "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "element_size", "get_device", "is_floating_point", "is_complex",
    "is_signed", "has_names", "__len__", "is_set_to", "untyped_storage", "data_ptr",
})
# properties that return the tensor's values (``x.data``, ``x.T``): cast like any read
_DATA_PROPERTIES = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})


def _owned(tensors: Iterable[torch.Tensor]) -> dict[int, torch.Tensor]:
    return {
        id(t): t
        for t in tensors
        if t.is_floating_point() and t.dtype != torch.float64
    }


def sees_whole_forward(module: nn.Module) -> bool:
    """Whether every part of ``module``'s forward runs through Python torch calls (no
    TorchScript submodule, whose weights the mode could not cast)."""
    return not any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())


class float64_reads(TorchFunctionMode):  # noqa: N801 - used like a function
    """While active, torch calls read the floating parameters and buffers of ``modules`` as
    float64 copies (see the module docstring). Use with :class:`reparam.verify.float64_default`
    and float64 inputs to run those modules as their float64 copies would run."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self._modules = modules
        self._owned: dict[int, torch.Tensor] = {}
        for module in modules:
            self._owned.update(_owned([*module.parameters(), *module.buffers()]))
        self._written: dict[int, torch.Tensor] = {}  # owned id -> its float64 copy, written
        self._saved: list[tuple[nn.Module, dict, dict, dict, dict]] = []

    def __enter__(self) -> float64_reads:
        # ``self.calls += 1`` rebinds a buffer to its float64 copy, ``self.last = y`` keeps
        # a float64 tensor: the run sees that, the modules are as they were afterwards
        self._saved = [
            (m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules))
            for root in self._modules
            for m in root.modules()
        ]
        self._written = {}
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for m, attributes, parameters, buffers, children in self._saved:
            m.__dict__.clear()
            m.__dict__.update(attributes)
            for live, saved in (
                (m._parameters, parameters), (m._buffers, buffers), (m._modules, children)
            ):
                live.clear()
                live.update(saved)
        self._saved, self._written = [], {}

    def _read(self, t: torch.Tensor) -> torch.Tensor:
        written = self._written.get(id(t))
        if written is not None:
            return written
        return t.detach().to(torch.float64)

    def _cast(self, value: Any, casts: dict[int, torch.Tensor]) -> Any:
        if isinstance(value, torch.Tensor):
            key = id(value)
            if key in self._owned and self._owned[key] is value:
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
            owned = isinstance(owner, torch.Tensor) and self._owned.get(id(owner)) is owner
            if not owned or (name == "__get__" and prop not in _DATA_PROPERTIES):
                if owned and prop == "dtype":
                    return torch.float64
                return func(*args, **kwargs)
            # x.data / x.T read the values; x.data = v writes them: both on the float64 copy,
            # kept for the rest of the run (the result may alias it)
            cast = self._written[id(owner)] = self._read(owner)
            return func(cast, *args[1:], **kwargs)
        if name in _METADATA_METHODS:
            return func(*args, **kwargs)
        casts: dict[int, torch.Tensor] = {}
        new_args = self._cast(args, casts)
        new_kwargs = (
            {k: self._cast(v, casts) for k, v in kwargs.items()} if kwargs else kwargs
        )
        if not casts:
            return func(*args, **kwargs)
        versions = {key: cast._version for key, cast in casts.items()}
        result = func(*new_args, **new_kwargs)
        for key, cast in casts.items():
            if cast._version != versions[key]:  # written in place: later reads see it
                self._written[key] = cast
        return result

"""One installation of torch.fx's module hooks for a whole deploy, instead of one per trace.

Every ``torch.fx.Tracer.trace`` call assigns ``nn.Module.__call__`` and
``nn.Module.__getattr__`` and restores them afterwards. Assigning a dunder on a class makes
CPython update that slot in *every* subclass: with timm imported that is over 1,400
classes, several milliseconds per assignment, four per trace. A deploy traces one module per
scope (a timm RepVGG-A0 has 135), so this alone cost more than the whole of timm's own
conversion.

:func:`shared_module_hooks` installs two dispatchers once. While a
:class:`~reparam.graph.capture.ConcreteTracer` traces, they do what fx's per-trace wrappers
do (a module call goes to ``tracer.call_module``, a parameter read to ``tracer.getattr``);
otherwise they call the original methods. While one of our tracers traces, the dispatchers
carry fx's own "already patched" mark, so ``Tracer.trace`` leaves ``nn.Module`` alone; any
other fx trace in the block patches over them as it would without the block. If a torch
release drops that mark, fx simply patches over the dispatchers during each trace: slower,
never different.

The same block makes fx build its wrapper of each ``torch.fx.wrap``-registered function once
(timm registers about ninety, and fx builds them all, with ``functools.wraps``, at every
trace), and finds the names fx autowraps (``math`` functions) once per globals dict instead
of scanning the dict at every trace. fx still patches and unpatches those functions around
each trace: putting its wrappers in place for a whole deploy instead made them visible to
everything that ran meanwhile (a function looked up during the deploy kept fx's wrapper, which
does not pickle). These use fx's private helpers; where a torch release lacks one, the block
leaves that part to fx.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.fx import _symbolic_trace as st

_tracers: list[Any] = []  # the ConcreteTracers tracing now, innermost last


def _module_call(mod: nn.Module, *args: Any, **kwargs: Any) -> Any:
    if not _tracers:
        return st._orig_module_call(mod, *args, **kwargs)
    tracer = _tracers[-1]

    def forward(*args: Any, **kwargs: Any) -> Any:
        return st._orig_module_call(mod, *args, **kwargs)

    patcher = st.CURRENT_PATCHER
    if patcher is not None:
        fn_globals = getattr(getattr(mod, "forward", mod), "__globals__", None)
        if fn_globals is not None and patcher.visit_once(fn_globals):
            _autowrap(patcher, fn_globals, tracer._autowrap_function_ids)
    return tracer.call_module(mod, forward, args, kwargs)


_autowrap_names: dict[int, tuple[dict[str, Any], int, set[int], tuple[str, ...]]] = {}


def _autowrap(patcher: Any, fn_globals: dict[str, Any], function_ids: set[int]) -> None:
    """fx's autowrap (``math.sqrt`` and friends called on proxies become nodes) for a callee's
    globals, with the names to wrap found once per globals dict instead of once per trace."""
    entry = _autowrap_names.get(id(fn_globals))
    if (
        entry is None
        or entry[0] is not fn_globals
        or entry[1] != len(fn_globals)
        or entry[2] != function_ids
    ):
        names = tuple(
            name
            for name, value in fn_globals.items()
            if not name.startswith("_") and callable(value) and id(value) in function_ids
        )
        entry = (fn_globals, len(fn_globals), set(function_ids), names)
        _autowrap_names[id(fn_globals)] = entry
    for name in entry[3]:
        patcher.patch(fn_globals, name, st._create_wrapped_func(fn_globals[name]))


def _autowrap_check(patcher: Any, frame_dict: dict[str, Any], function_ids: set[int]) -> None:
    """fx's ``_autowrap_check`` (run on the traced forward's globals and on ``math`` at every
    trace) with :func:`_autowrap`'s names found once per dict."""
    if patcher.visit_once(frame_dict):
        _autowrap(patcher, frame_dict, function_ids)


def _module_getattr(mod: nn.Module, attr: str) -> Any:
    value = st._orig_module_getattr(mod, attr)
    if not _tracers:
        return value
    tracer = _tracers[-1]
    if isinstance(value, torch.Tensor):
        tracer.note_attribute(mod, attr, value)
    return tracer.getattr(attr, value, tracer.parameter_proxies)


def _mark(patched: bool) -> None:
    """fx's "already patched" mark on the dispatchers: while one of our tracers traces,
    ``Tracer.trace`` then leaves ``nn.Module`` alone; otherwise any other fx trace (a user's
    ``symbolic_trace`` inside the block) patches its own wrappers over them, as it would
    without the block, and puts the dispatchers back when it ends."""
    for fn in (_module_call, _module_getattr):
        fn.__dict__["__fx_already_patched"] = patched


_mark(False)


@contextlib.contextmanager
def tracing_with(tracer: Any) -> Iterator[None]:
    """Route module calls and attribute reads to ``tracer`` while it traces."""
    _tracers.append(tracer)
    _mark(True)
    try:
        yield
    finally:
        _tracers.remove(tracer)
        _mark(bool(_tracers))


_wrappers: dict[int, tuple[Any, Any]] = {}


def _wrapped_func(orig_fn: Any) -> Any:
    """fx's wrapper for a ``torch.fx.wrap``-registered function, made once per function:
    the wrapper keeps no state (it looks for a proxy among the arguments at each call), but
    fx builds a new one, with ``functools.wraps``, for every registered function at every
    trace (timm registers about ninety)."""
    entry = _wrappers.get(id(orig_fn))
    if entry is None or entry[0] is not orig_fn:
        entry = (orig_fn, _fx_create_wrapped_func(orig_fn))
        _wrappers[id(orig_fn)] = entry
    return entry[1]


_fx_create_wrapped_func = st._create_wrapped_func
#: fx's autowrap check, which the block replaces where this torch release has it
_fx_autowrap_check = getattr(st, "_autowrap_check", None)


@contextlib.contextmanager
def shared_module_hooks() -> Iterator[None]:
    """Install the two dispatchers on ``nn.Module``, fx's wrapper cache and the cached
    autowrap check for the duration of the block."""
    saved = nn.Module.__dict__["__call__"], nn.Module.__dict__["__getattr__"]
    if saved == (_module_call, _module_getattr):
        yield  # already installed by an enclosing block
        return
    nn.Module.__call__ = _module_call  # type: ignore[method-assign]
    nn.Module.__getattr__ = _module_getattr  # type: ignore[method-assign]
    st._create_wrapped_func = _wrapped_func
    if _fx_autowrap_check is not None:
        st._autowrap_check = _autowrap_check
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = saved  # type: ignore[method-assign]
        st._create_wrapped_func = _fx_create_wrapped_func
        if _fx_autowrap_check is not None:
            st._autowrap_check = _fx_autowrap_check

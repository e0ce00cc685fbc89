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

The same block makes fx build its wrapper of each ``torch.fx.wrap``-registered function once,
and puts those wrappers and fx's wrappers of the ``math`` functions in place once for the
block instead of once per trace (timm registers about ninety functions, ``math`` has about
sixty: a patch and an unpatch of each, and a scan of ``math`` and of the forward's globals, at
every trace, were a tenth of a small module's trace). A wrapper calls its function unless a
proxy is among the arguments, which only a trace makes. These use fx's private helpers; where
a torch release lacks one, the block leaves that part to fx.
"""

from __future__ import annotations

import builtins
import contextlib
import math
from collections.abc import Iterator
from typing import Any

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
_originals: dict[int, int] = {}  # id of a wrapper put in place by the block -> its function's


def _autowrap(patcher: Any, fn_globals: dict[str, Any], function_ids: set[int]) -> None:
    """fx's autowrap (``math.sqrt`` and friends called on proxies become nodes) for a callee's
    globals, with the names to wrap found once per globals dict instead of once per trace."""
    if _originals:
        # a tracer made inside the block listed fx's wrappers in ``math``: the functions a
        # forward imported from ``math`` are the originals
        function_ids = function_ids | {_originals.get(i, i) for i in function_ids}
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


def _patch_wrapped_functions(patcher: Any) -> None:
    """fx's ``_patch_wrapped_functions`` (run at every trace), minus the functions whose fx
    wrapper the block already put in place (fx's ``patch`` would find each of them patched
    and do nothing; about ninety with timm imported)."""
    for (_, name), frame_dict in st._wrapped_fns_to_patch.copy().items():
        current = frame_dict.get(name)
        if current is not None and id(current) in _originals:
            continue
        if name not in frame_dict and hasattr(builtins, name):
            original = getattr(builtins, name)
        else:
            original = frame_dict[name]
        patcher.patch(frame_dict, name, st._create_wrapped_func(original))
    for cls, name in st._wrapped_methods_to_patch:
        patcher.patch_method(cls, name, st._create_wrapped_method(cls, name))


def _module_getattr(mod: nn.Module, attr: str) -> Any:
    value = st._orig_module_getattr(mod, attr)
    if not _tracers:
        return value
    tracer = _tracers[-1]
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
#: fx's private helpers the block replaces or reads (all there since torch 2.1)
_FX_HELPERS = all(
    hasattr(st, name)
    for name in (
        "_autowrap_check",
        "_patch_wrapped_functions",
        "_wrapped_fns_to_patch",
        "_wrapped_methods_to_patch",
        "_create_wrapped_method",
    )
)
_fx_autowrap_check = getattr(st, "_autowrap_check", None)
_fx_patch_wrapped_functions = getattr(st, "_patch_wrapped_functions", None)


def _prewrap() -> list[tuple[dict[str, Any], str, Any]]:
    """Put fx's wrappers in place for the whole block, marked as fx's own patches, so that
    no trace patches and unpatches them again: the ``torch.fx.wrap``-registered functions
    (fx's ``patcher.patch`` finds them already patched) and the ``math`` functions fx
    autowraps (its autowrap check then finds no function of its list in ``math``: the
    wrappers are not on it). A wrapper calls the original function unless a proxy is among
    the arguments, which only a trace makes. Returns what to put back."""
    saved: list[tuple[dict[str, Any], str, Any]] = []
    targets: list[tuple[dict[str, Any], str]] = [
        (frame_dict, name)
        for (_, name), frame_dict in st._wrapped_fns_to_patch.copy().items()
        if name in frame_dict  # fx patches a builtin into the dict; leave those to fx
    ]
    targets += [
        (math.__dict__, name)
        for name, value in list(math.__dict__.items())
        if not name.startswith("_") and callable(value)
    ]
    for frame_dict, name in targets:
        original = frame_dict[name]
        if getattr(original, "__fx_already_patched", False):
            continue
        wrapper = _wrapped_func(original)
        wrapper.__dict__["__fx_already_patched"] = True
        saved.append((frame_dict, name, original))
        frame_dict[name] = wrapper
        _originals[id(wrapper)] = id(original)
    return saved


@contextlib.contextmanager
def shared_module_hooks() -> Iterator[None]:
    """Install the two dispatchers on ``nn.Module``, fx's wrapper cache and fx's wrappers of
    the functions it patches at every trace, for the duration of the block."""
    saved = nn.Module.__dict__["__call__"], nn.Module.__dict__["__getattr__"]
    if saved == (_module_call, _module_getattr):
        yield  # already installed by an enclosing block
        return
    nn.Module.__call__ = _module_call  # type: ignore[method-assign]
    nn.Module.__getattr__ = _module_getattr  # type: ignore[method-assign]
    st._create_wrapped_func = _wrapped_func
    helpers = _FX_HELPERS
    if helpers:
        st._autowrap_check = _autowrap_check
        st._patch_wrapped_functions = _patch_wrapped_functions
    wrapped: list[tuple[dict[str, Any], str, Any]] = []
    try:
        if helpers:
            wrapped = _prewrap()
        yield
    finally:
        for frame_dict, name, original in reversed(wrapped):
            frame_dict[name] = original
        _originals.clear()
        nn.Module.__call__, nn.Module.__getattr__ = saved  # type: ignore[method-assign]
        st._create_wrapped_func = _fx_create_wrapped_func
        if helpers:
            st._autowrap_check = _fx_autowrap_check
            st._patch_wrapped_functions = _fx_patch_wrapped_functions

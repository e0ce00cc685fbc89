"""Expose the ``reparam_models`` zoo through timm's model registry.

With timm installed, ``import reparam_models`` makes every zoo name reachable through timm::

    import reparam_models, timm

    model = timm.create_model("repmlpnet_b224", pretrained=False, num_classes=10)
    timm.list_models("repmlp*")                       # our names, next to timm's own
    timm.create_model("repmlpnet_t224", inference=True)      # the deployed form

Each name gets a small timm entry point that calls :func:`reparam_models.create_model`. What it
does with the arguments timm's ``create_model`` hands to every entry point:

* model kwargs (``num_classes``, ``in_chans``, ``features_only``, ``img_size``, ``inference``,
  ...) are forwarded unchanged; one the model does not take raises its ``TypeError``;
* ``device`` builds the model under that device (``"meta"`` allocates nothing), ``dtype``
  casts it afterwards;
* ``pretrained=True`` loads a local file, as :func:`reparam_models.create_model` does: timm's
  ``pretrained_cfg_overlay=dict(file=PATH)``, or the file registered for the model
  (:func:`reparam_models.set_pretrained_file`, ``$REPARAM_MODELS_WEIGHTS``); it goes through the
  family's checkpoint filter, so checkpoints in the reference implementation's key layout load
  too. No weights are hosted, so without a file it is a
  :class:`~reparam_models.PretrainedWeightsError` (a ``RuntimeError``). (timm's own
  ``checkpoint_path=PATH`` also works, for checkpoints in our key layout.)
* the other keys of ``pretrained_cfg_overlay`` are merged into ``model.pretrained_cfg``;
  ``pretrained_cfg`` and ``cache_dir`` are ignored.

A name timm already has (``resnet50``: timm's ResNet-50 and our RepMLP-ResNet baseline share
it) is registered with timm under the prefixed name ``reparam_<name>``
(``timm.create_model("reparam_resnet50")``), silently; timm's own model keeps its name. Only an
explicit ``register_timm_models([...])`` that asks for such a name warns
(:class:`TimmBridgeWarning`), to say which name it got. :func:`timm_name` gives the timm name of
any zoo model.

Importing timm costs seconds, so ``import reparam_models`` does not import it: if timm is
already imported the names are registered at once, otherwise the first ``import timm``
registers them as soon as timm has loaded. Without timm nothing happens and nothing fails.
:func:`register_timm_models` does the registration explicitly (it is idempotent).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._factory import create_model
from .registry import list_models

__all__ = ["TimmBridgeWarning", "register_timm_models", "timm_model_names", "timm_name"]

_MARK = "_reparam_models_entrypoint"
PREFIX = "reparam_"  # timm name of a zoo model whose own name timm already uses
# Arguments timm's create_model passes to every entry point that mean nothing to our models.
_IGNORED = ("pretrained_cfg", "cache_dir")
# timm names this module registered (or found registered by an earlier copy of it).
_REGISTERED: dict[str, Callable[..., nn.Module]] = {}
# zoo name -> the timm name it is registered under.
_TIMM_NAMES: dict[str, str] = {}


class TimmBridgeWarning(UserWarning):
    """A zoo model could not be registered with timm under the name asked for (name taken:
    it got the prefixed name), or timm failed."""


def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    for key in _IGNORED:
        kwargs.pop(key, None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    if not pretrained:
        overlay.pop("file", None)  # a file is loaded only with pretrained=True, as in timm
    where = torch.device(device) if device is not None else contextlib.nullcontext()
    with where:
        model = create_model(name, pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    if dtype is not None:
        model.to(dtype=dtype)
    return model


def _entrypoint(name: str, timm_name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, pretrained, kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name
    # timm files the name under this module ("timm_bridge") and appends it to our __all__,
    # so it is also set as a module attribute below.
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (
        f"``{name}`` from ``reparam_models`` (training-time form; ``inference=True`` builds "
        "the deployed form), registered with timm by ``reparam_models.timm_bridge``."
    )
    setattr(entrypoint, _MARK, True)
    return entrypoint


def register_timm_models(names: Iterable[str] | None = None) -> list[str]:
    """Register zoo models with timm's registry; return the names registered by this call.

    Args:
        names: zoo names (default: all of :func:`reparam_models.list_models`).

    Names already registered by this bridge are left as they are; a name timm already uses
    for another model is registered as ``reparam_<name>`` instead, with a
    :class:`TimmBridgeWarning` when ``names`` asked for it explicitly (silently otherwise).
    Returns the timm names. Without timm this does nothing and returns ``[]``.
    """
    try:
        from timm.models import is_model, model_entrypoint
        from timm.models import register_model as timm_register_model
    except ImportError:
        return []
    wanted = list_models() if names is None else list(names)
    unknown = [n for n in wanted if n not in list_models()]
    if unknown:
        raise ValueError(f"not reparam_models names: {', '.join(unknown)}")
    added: list[str] = []
    renamed: list[str] = []
    module = sys.modules[__name__]
    for name in wanted:
        timm_name = name
        for candidate in (name, PREFIX + name):
            timm_name = candidate
            if not is_model(candidate) or getattr(model_entrypoint(candidate), _MARK, False):
                break
        else:
            warnings.warn(
                f"timm already has models named {name!r} and {PREFIX + name!r}: the "
                "reparam_models model is not registered with timm (use "
                "reparam_models.create_model for it)",
                TimmBridgeWarning,
                stacklevel=2,
            )
            continue
        if timm_name != name:
            renamed.append(name)
        _TIMM_NAMES[name] = timm_name
        if timm_name in _REGISTERED:
            continue
        if is_model(timm_name):  # ours, from an earlier import of this module
            _REGISTERED[timm_name] = model_entrypoint(timm_name)
            continue
        fn = _entrypoint(name, timm_name)
        setattr(module, timm_name, fn)
        timm_register_model(fn)
        _REGISTERED[timm_name] = fn
        added.append(timm_name)
    if renamed and names is not None:
        warnings.warn(
            "timm already has a model named "
            + ", ".join(f"{n!r} (registered as {_TIMM_NAMES[n]!r})" for n in renamed)
            + ": timm.create_model builds timm's model under that name",
            TimmBridgeWarning,
            stacklevel=2,
        )
    return added


def timm_name(name: str) -> str | None:
    """The name the zoo model ``name`` has in timm's registry (``None`` if not registered)."""
    return _TIMM_NAMES.get(name)


def timm_model_names() -> list[str]:
    """Sorted zoo names that this bridge has registered with timm."""
    return sorted(_REGISTERED)


def _register_quietly_failing() -> None:
    """Registration triggered by an import: never let it break that import."""
    try:
        register_timm_models()
    except Exception as exc:  # a broken timm install must not break the import
        warnings.warn(
            f"could not register reparam_models with timm: {type(exc).__name__}: {exc}",
            TimmBridgeWarning,
            stacklevel=3,
        )


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """One-shot import hook: when ``timm`` is imported, register our models right after."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("timm")  # the normal finders, this hook removed
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return None  # let the import proceed unhooked

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register_quietly_failing()

        loader.exec_module = exec_then_register  # type: ignore[union-attr]
        return spec


_HOOK = _RegisterWhenTimmLoads()


def _remove_hook() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_HOOK)


def _install() -> None:
    """Called on ``import reparam_models``: register now, or when timm gets imported."""
    if "timm" in sys.modules:
        _register_quietly_failing()
        return
    try:
        installed = importlib.util.find_spec("timm") is not None
    except (ImportError, ValueError):
        installed = False
    if installed and _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


_install()

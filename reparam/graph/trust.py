"""The trust model: when a layer, or a traced forward, is what it claims to be.

A traced graph is only a true account of a module when every layer it keeps as a leaf
computes exactly what its library class computes, and when nothing the graph cannot see
(hooks, an instance-level ``forward``, TorchScript) decides what runs. This module answers
those questions in one place; the capture (:mod:`reparam.graph.capture`) and the rules ask it.

* **trusted leaf** — a built-in ``torch.nn`` layer whose class (and every class of its MRO
  that is not torch's own) overrides nothing that computes (``forward``, ``_conv_forward``,
  a ``weight`` property ...), with no hooks and no parametrizations: rules may fold it.
* **opaque** — a module the engine must call as it is, never trace through and never fold:
  one with hooks (old-style ``weight_norm``, ``spectral_norm`` and ``prune`` refresh their
  weights in a pre-hook), an instance-level ``forward``, a TorchScript module.
* everything else is traced through (user modules, containers, built-in subclasses that
  override internals, parametrized layers), so the engine sees what they really compute.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)

# overriding these changes no computation of the layer
_HARMLESS = frozenset(
    {
        "__init__",
        "__repr__",
        "__setstate__",
        "__getstate__",
        "__annotations__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__dict__",
        "__weakref__",
        "__firstlineno__",
        "__static_attributes__",
        "__orig_bases__",
        "__parameters__",
        "extra_repr",
        "reset_parameters",
        "reset_running_stats",
        "_get_name",
        "_check_input_dim",
        "_load_from_state_dict",
        "_save_to_state_dict",
    }
)

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _is_torch_class(klass: type) -> bool:
    return klass.__module__.startswith("torch.") or klass is object


def _library_class(module: nn.Module) -> type | None:
    """The torch.nn class that defines ``module``'s forward, when it is torch's own."""
    for klass in type(module).__mro__:
        if "forward" in klass.__dict__:
            return klass if klass.__module__.startswith("torch.nn.") else None
    return None


def overridden_internals(module: nn.Module) -> list[str]:
    """Names that a non-torch class in ``module``'s MRO defines over torch's behaviour."""
    names = []
    for klass in type(module).__mro__:
        if _is_torch_class(klass) or klass.__dict__.get("_reparam_deployed_class"):
            continue
        for name, value in klass.__dict__.items():
            if name in _HARMLESS:
                continue
            if callable(value) or isinstance(value, (property, staticmethod, classmethod)):
                names.append(name)
            elif hasattr(value, "__get__") and not isinstance(value, (int, float, str)):
                names.append(name)
    return names


def hook_reason(module: nn.Module) -> str | None:
    """Why hooks make ``module`` something a trace cannot stand for, or None."""
    for attr in _HOOK_DICTS:
        hooks = getattr(module, attr, None)
        if hooks:
            kinds = {
                "_forward_hooks": "a forward hook",
                "_forward_pre_hooks": "a forward pre-hook",
                "_backward_hooks": "a backward hook",
                "_backward_pre_hooks": "a backward pre-hook",
            }
            names = ", ".join(
                sorted({getattr(h, "__qualname__", type(h).__name__) for h in hooks.values()})
            )
            return f"it has {kinds[attr]} ({names}) that a rewrite would drop"
    return None


def opaque_reason(module: nn.Module) -> str | None:
    """Why ``module`` must be called as it is (never traced through, never folded)."""
    if isinstance(module, torch.jit.ScriptModule):
        return "it is a TorchScript module"
    if "forward" in module.__dict__:
        return "it has an instance-level 'forward' attribute, not its class's forward"
    return hook_reason(module)


def is_trusted_leaf(module: nn.Module) -> bool:
    """A built-in layer that computes exactly what its library class computes."""
    if isinstance(module, _CONTAINERS) or type(module) is nn.Module:
        return False
    if _library_class(module) is None:
        return False
    if opaque_reason(module) is not None or parametrize.is_parametrized(module):
        return False
    return not overridden_internals(module)


def untrusted_reason(module: nn.Module) -> str | None:
    """Why a layer that looks built-in may not be folded as its class (None: it may)."""
    reason = opaque_reason(module)
    if reason is not None:
        return reason
    if parametrize.is_parametrized(module):
        return "its weights are computed by a parametrization"
    names = overridden_internals(module)
    if names and _library_class(module) is not None:
        return f"its class overrides {', '.join(sorted(names))}"
    return None

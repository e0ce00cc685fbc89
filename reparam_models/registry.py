"""The model registry: pure tables of entry points and pretrained configurations (timm style).

Nothing here builds or loads a model: the family files (``repmlpnet.py``, ``repmlp_resnet.py``,
``face.py``) register their entry points with :func:`register_model` and their configurations
with :func:`register_pretrained_cfgs`; :func:`reparam_models.create_model` looks them up.

**Pretrained weights.** ``reparam_models`` hosts and downloads nothing. A model *has pretrained
weights* when a local file is known for it:

* :func:`set_pretrained_file` (``set_pretrained_file("repmlpnet_b224", "RepMLPNet-B224.pth")``), or
* a file named ``<model name>.safetensors`` / ``.pth`` / ``.pt`` in the folder named by the
  ``REPARAM_MODELS_WEIGHTS`` environment variable (read on every look-up).

``list_models(pretrained=True)`` lists exactly those models, and ``create_model(name,
pretrained=True)`` loads that file (with the family's checkpoint filter, so the reference
implementation's checkpoints load as they are). The models whose authors released weights have
``pretrained_cfg["origin_url"]`` set: that is where to get the file.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "WEIGHTS_ENV",
    "UnknownModelError",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "model_entrypoint",
    "pretrained_file",
    "register_model",
    "register_pretrained_cfgs",
    "set_pretrained_file",
]

WEIGHTS_ENV = "REPARAM_MODELS_WEIGHTS"
_SUFFIXES = (".safetensors", ".pth", ".pt")

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_PRETRAINED_CFGS: dict[str, dict[str, Any]] = {}
_FILES: dict[str, Path] = {}


class UnknownModelError(ValueError):
    """Raised by :func:`reparam_models.create_model` for a name that is not registered."""


def register_model(fn: _F) -> _F:
    """Register a model entry point under its function name.

    The entry point takes ``pretrained: bool = False`` and the model's keyword arguments
    (``inference``, ``num_classes``, ``features_only``, ...).
    """
    name = fn.__name__
    if name in _ENTRYPOINTS and _ENTRYPOINTS[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered")
    _ENTRYPOINTS[name] = fn
    return fn


def register_pretrained_cfgs(cfgs: Mapping[str, Mapping[str, Any]]) -> None:
    """Record the pretrained configuration (``pretrained_cfg``) of each named model."""
    for name, cfg in cfgs.items():
        _PRETRAINED_CFGS[name] = dict(cfg)


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted registered model names.

    Args:
        pattern: a shell-style pattern (``"repmlpnet_*"``).
        pretrained: only the models that have a local weights file (see the module docstring).
    """
    names = sorted(_ENTRYPOINTS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        names = [n for n in names if pretrained_file(n) is not None]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _ENTRYPOINTS


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_ENTRYPOINTS), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"Unknown model {name!r}.{hint} Available models: {', '.join(list_models())}"
    )


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The entry point registered as ``name`` (:class:`UnknownModelError` if none)."""
    if name not in _ENTRYPOINTS:
        raise _unknown(name)
    return _ENTRYPOINTS[name]


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """A copy of the pretrained configuration of ``name``, with ``file`` set to the local
    weights file when one is known (``None`` otherwise)."""
    if name not in _ENTRYPOINTS:
        raise _unknown(name)
    cfg = copy.deepcopy(_PRETRAINED_CFGS.get(name, {}))
    cfg["architecture"] = name
    path = pretrained_file(name)
    cfg["file"] = None if path is None else str(path)
    return cfg


def set_pretrained_file(name: str, path: str | os.PathLike[str] | None) -> None:
    """Use the local file ``path`` as the pretrained weights of ``name`` (``None`` forgets it).

    The file is a ``torch.save`` state_dict / training checkpoint or a ``.safetensors`` file,
    in our key layout or the reference implementation's.
    """
    if name not in _ENTRYPOINTS:
        raise _unknown(name)
    if path is None:
        _FILES.pop(name, None)
        return
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: '{file}' (pretrained weights for {name!r})")
    _FILES[name] = file


def pretrained_file(name: str) -> Path | None:
    """The local weights file of ``name``: the one set with :func:`set_pretrained_file`, else
    ``$REPARAM_MODELS_WEIGHTS/<name>{.safetensors,.pth,.pt}``, else ``None``."""
    if name in _FILES:
        return _FILES[name]
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        for suffix in _SUFFIXES:
            candidate = Path(folder) / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None

"""Model registry: ``register_model``, ``create_model``, ``list_models`` (timm style)."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "UnknownModelError"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    """Raised by :func:`create_model` for a name that is not registered."""


def register_model(fn: _F) -> _F:
    """Register a model factory under its function name.

    The factory must accept ``inference: bool`` as a keyword and any model kwargs.
    """
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _REGISTRY


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"Unknown model {name!r}.{hint} Available models: {', '.join(list_models())}"
    )


def create_model(
    name: str,
    pretrained_path: str | os.PathLike[str] | None = None,
    inference: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        pretrained_path: optional checkpoint file (``torch.save`` output or ``.safetensors``),
            in our key layout or in the reference implementation's (training-time or deployed);
            loaded through :func:`reparam_models.checkpoint.load_reference_state_dict`.
        inference: build the inference (deployed) form instead of the training-time form.
        **kwargs: passed to the model (e.g. ``num_classes``, ``features_only``).
    """
    if name not in _REGISTRY:
        raise _unknown(name)
    model = _REGISTRY[name](inference=inference, **kwargs)
    if pretrained_path is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, pretrained_path, strict=True)
    return model

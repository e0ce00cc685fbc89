"""``build_model_with_cfg``: build a zoo model, attach its ``pretrained_cfg``, load its weights.

The family files call it from their entry points, passing their ``checkpoint_filter_fn`` (the
timm shape): the filter maps a checkpoint in the reference implementation's layout to ours.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from torch import nn

from reparam.errors import ReparamError

from .checkpoint import CheckpointFilter, load_checkpoint
from .registry import WEIGHTS_ENV, get_pretrained_cfg

__all__ = ["PretrainedWeightsError", "build_model_with_cfg"]

_M = TypeVar("_M", bound=nn.Module)


class PretrainedWeightsError(ReparamError, RuntimeError):
    """``pretrained=True`` for a model with no local weights file."""


def _missing_weights(variant: str, cfg: dict[str, Any]) -> PretrainedWeightsError:
    origin = cfg.get("origin_url")
    where = (
        f"the authors' weights are linked from {origin}; " if origin
        else "the authors released no weights for it; "
    )
    return PretrainedWeightsError(
        f"no pretrained weights for {variant!r}: reparam_models hosts and downloads none "
        f"({where}pass a local file with create_model({variant!r}, pretrained_path=PATH) or "
        "pretrained_cfg_overlay=dict(file=PATH), register one with "
        f"reparam_models.set_pretrained_file({variant!r}, PATH), or put it in the folder named "
        f"by ${WEIGHTS_ENV} as {variant}.pth / .safetensors)"
    )


def build_model_with_cfg(
    model_cls: type[_M],
    variant: str,
    pretrained: bool = False,
    *,
    pretrained_filter_fn: CheckpointFilter,
    model_args: dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    pretrained_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> _M:
    """Build ``model_cls(**model_args, **kwargs)`` as the registered ``variant``.

    Args:
        model_cls: the model class.
        variant: the registered name (its pretrained configuration is looked up).
        pretrained: load the variant's weights: ``pretrained_path``, else
            ``pretrained_cfg_overlay["file"]``, else the registered local file
            (:func:`reparam_models.set_pretrained_file`); :class:`PretrainedWeightsError` if
            there is none.
        pretrained_filter_fn: maps a checkpoint to the model's key layout.
        model_args: the variant's architecture arguments (``kwargs`` override them).
        pretrained_cfg_overlay: entries that override the variant's ``pretrained_cfg``.
        pretrained_path: a weights file; given, it is loaded even without ``pretrained``.

    The model's ``pretrained_cfg`` is the variant's configuration with the values of this
    instance (``input_size``, ``num_classes``, ...) and then the overlay on top. A
    ``features_only`` model gets the weights of the full model (loaded into one first).
    """
    overlay = dict(pretrained_cfg_overlay or {})
    cfg = get_pretrained_cfg(variant)
    path = pretrained_path if pretrained_path is not None else overlay.get("file") or None
    if path is None and pretrained:
        path = cfg.get("file")
        if path is None:
            raise _missing_weights(variant, cfg)
    args = {**(model_args or {}), **kwargs}
    if path is not None and args.get("features_only"):
        full_args = {k: v for k, v in args.items() if k not in ("features_only", "out_indices")}
        full = model_cls(**full_args)
        load_checkpoint(full, path, strict=True, filter_fn=pretrained_filter_fn)
        model = model_cls(**args)
        keep = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in full.state_dict().items() if k in keep},
                              strict=True)
        del full
    else:
        model = model_cls(**args)
        if path is not None:
            load_checkpoint(model, path, strict=True, filter_fn=pretrained_filter_fn)
    own = dict(getattr(model, "pretrained_cfg", {}))
    merged = {**cfg, **own, **overlay}
    if path is not None:
        merged["file"] = os.fspath(path)
    model.pretrained_cfg = merged
    return model

"""``create_model``: build a registered model by name (timm's signature)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .registry import model_entrypoint

__all__ = ["create_model"]


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    pretrained_path: str | os.PathLike[str] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    inference: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`reparam_models.list_models`.
        pretrained: load the model's weights (timm's flag). Nothing is downloaded: the file is
            ``pretrained_path``, ``pretrained_cfg_overlay["file"]`` or the one registered for
            ``name`` (:func:`reparam_models.set_pretrained_file`, ``$REPARAM_MODELS_WEIGHTS``);
            without one, a :class:`~reparam_models.PretrainedWeightsError` says where to get it.
        pretrained_path: a checkpoint file (``torch.save`` output or ``.safetensors``), in our
            key layout or the reference implementation's (training-time or deployed); loaded
            with the family's checkpoint filter, even without ``pretrained``.
        pretrained_cfg_overlay: entries that override the model's ``pretrained_cfg``.
        inference: build the inference (deployed) form instead of the training-time form.
        **kwargs: passed to the model (``num_classes``, ``global_pool``, ``features_only``,
            ``out_indices``, ``in_chans``, ``img_size``, ...).
    """
    if not isinstance(pretrained, bool):
        raise TypeError(
            f"create_model: pretrained must be True or False, got {type(pretrained).__name__} "
            "(pass a checkpoint file as pretrained_path=PATH)"
        )
    entrypoint = model_entrypoint(name)
    return entrypoint(
        pretrained=pretrained,
        pretrained_path=pretrained_path,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        inference=inference,
        **kwargs,
    )

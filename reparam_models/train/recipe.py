"""The training recipe, built from timm's utilities.

Reference recipe of RepMLPNet (arXiv:2112.11081; its public code): 100 epochs, AdamW,
lr = 1e-3 x batch / 256, weight decay 0.1 with none on 1-D parameters (norms) and biases,
10 warm-up epochs from 5e-7 then cosine to 0, RandAugment magnitude 15, mixup 0.4,
cutmix 1.0, label smoothing 0.1, gradient clipping at norm 5.

* Optimizer: ``timm.optim.create_optimizer_v2(model, "adamw", filter_bias_and_bn=True)``
  (no weight decay on parameters with ``ndim <= 1``, i.e. norms and biases).
* Schedule: ``timm.scheduler.create_scheduler_v2(sched="cosine", ...)`` stepped every update.
* Mixup/cutmix: ``timm.data.Mixup`` (which also smooths the labels); loss
  ``timm.loss.SoftTargetCrossEntropy`` with mixup, ``LabelSmoothingCrossEntropy`` without.
* EMA: ``timm.utils.ModelEmaV3``. Clipping: ``timm.utils.dispatch_clip_grad``.

``digits`` is the same recipe scaled to a few epochs on 1,437 tiny images: a larger learning
rate, one warm-up epoch, milder augmentation (no flips -- digits are not mirror-symmetric)
and no mixup/cutmix (they need many epochs to pay off).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

__all__ = ["Recipe", "PRESETS", "build_optimizer", "build_scheduler", "build_mixup",
           "build_loss", "build_ema", "scaled_lr"]


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training recipe (``lr`` is per 256 images of global batch)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_lr: float
    min_lr: float
    auto_augment: str | None
    scale: tuple[float, float]
    hflip: float
    crop_pct: float
    mixup: float
    cutmix: float
    smoothing: float
    clip_grad: float | None
    ema_decay: float | None


PRESETS: dict[str, Recipe] = {
    "reference": Recipe(
        epochs=100, batch_size=256, lr=1e-3, weight_decay=0.1, warmup_epochs=10,
        warmup_lr=5e-7, min_lr=0.0, auto_augment="rand-m15", scale=(0.08, 1.0), hflip=0.5,
        crop_pct=0.875, mixup=0.4, cutmix=1.0, smoothing=0.1, clip_grad=5.0, ema_decay=None,
    ),
    "digits": Recipe(
        epochs=10, batch_size=64, lr=2e-2, weight_decay=0.05, warmup_epochs=1,
        warmup_lr=1e-5, min_lr=0.0, auto_augment="rand-m6-n1", scale=(0.7, 1.0), hflip=0.0,
        crop_pct=1.0, mixup=0.0, cutmix=0.0, smoothing=0.1, clip_grad=5.0, ema_decay=None,
    ),
}


def with_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """``recipe`` with every non-``None`` entry of ``overrides`` that names a field replaced."""
    names = {f.name for f in fields(Recipe)}
    return replace(recipe, **{k: v for k, v in overrides.items() if k in names and v is not None})


def scaled_lr(recipe: Recipe, global_batch: int) -> float:
    """The linear scaling rule: ``lr x global_batch / 256``."""
    return recipe.lr * global_batch / 256


def build_optimizer(model: nn.Module, recipe: Recipe, global_batch: int) -> torch.optim.Optimizer:
    """AdamW with weight decay on every parameter except 1-D ones (norms, biases)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, "adamw", lr=scaled_lr(recipe, global_batch),
                               weight_decay=recipe.weight_decay, filter_bias_and_bn=True)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, epochs: int,
                    updates_per_epoch: int) -> Any:
    """Linear warm-up from ``warmup_lr``, then cosine to ``min_lr`` at the end, per update."""
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def build_mixup(recipe: Recipe, num_classes: int) -> Any | None:
    """``timm.data.Mixup`` (mixup/cutmix with label smoothing), or ``None`` when both are off."""
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                 label_smoothing=recipe.smoothing, num_classes=num_classes)


def build_loss(recipe: Recipe, mixup: Any | None) -> nn.Module:
    """Soft-target cross entropy after mixup; label-smoothing cross entropy otherwise."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup is not None:
        return SoftTargetCrossEntropy()
    if recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
    return nn.CrossEntropyLoss()


def build_ema(model: nn.Module, recipe: Recipe) -> Any | None:
    """``timm.utils.ModelEmaV3`` of ``model`` (``None`` without ``ema_decay``)."""
    if not recipe.ema_decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=recipe.ema_decay)

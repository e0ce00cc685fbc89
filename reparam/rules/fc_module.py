"""Shared helper of the FC rules (not a rule): a fresh FC module with given weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def fc_like(fc: nn.Linear | nn.Conv2d, weight: Tensor, bias: Tensor, groups: int = 1) -> nn.Module:
    """A new ``nn.Linear`` (or 1×1 ``nn.Conv2d`` with ``groups``) shaped, typed and placed like
    ``fc``, always with a bias, holding ``weight`` (any shape with the same elements) and
    ``bias`` cast to ``fc``'s dtype."""
    dtype, device = fc.weight.dtype, fc.weight.device
    if isinstance(fc, nn.Linear):
        new: nn.Module = nn.Linear(fc.in_features, fc.out_features, device=device, dtype=dtype)
    else:
        new = nn.Conv2d(
            fc.in_channels, fc.out_channels, 1, groups=groups, device=device, dtype=dtype
        )
    with torch.no_grad():
        new.weight.copy_(weight.reshape(new.weight.shape))
        new.bias.copy_(bias)
    return new

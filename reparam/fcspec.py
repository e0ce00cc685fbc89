"""What counts as an FC (a linear or an unpadded 1×1 conv), and a fresh FC module
with given weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_fc(module: nn.Module) -> bool:
    """An FC: a ``nn.Linear``, or a 1×1 ``nn.Conv2d`` with stride 1, no padding, no dilation."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding == (0, 0)
        and module.dilation == (1, 1)
    )


def fc_like(fc: nn.Linear | nn.Conv2d, weight: Tensor, bias: Tensor, groups: int = 1) -> nn.Module:
    """A new ``nn.Linear`` (or 1×1 ``nn.Conv2d`` with ``groups``) shaped, typed and placed like
    ``fc``, always with a bias, holding ``weight`` (any shape with the same elements) and
    ``bias`` cast to ``fc``'s dtype."""
    dtype, device = fc.weight.dtype, fc.weight.device
    # skip_init: no random initialization of weights that are overwritten below
    if isinstance(fc, nn.Linear):
        new: nn.Module = nn.utils.skip_init(
            nn.Linear, fc.in_features, fc.out_features, device=device, dtype=dtype
        )
    else:
        new = nn.utils.skip_init(
            nn.Conv2d, fc.in_channels, fc.out_channels, 1, groups=groups, device=device,
            dtype=dtype,
        )
    with torch.no_grad():
        new.weight.copy_(weight.reshape(new.weight.shape))
        new.bias.copy_(bias)
    return new

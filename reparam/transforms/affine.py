r"""Per-channel affine maps: batch norm in eval mode, and folding them into convs / linears.

Maths
-----
Batch norm in eval mode is a per-channel affine map (RepVGG, Ding et al. 2021,
arXiv:2101.03697, Sec. 3.3; ACNet, Ding et al. 2019, arXiv:1908.03930, "BN fusion")

.. math::  \mathrm{BN}(x)_c = \gamma_c \frac{x_c - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c
           = s_c x_c + t_c,\quad s_c = \frac{\gamma_c}{\sqrt{\sigma_c^2+\epsilon}},\;
           t_c = \beta_c - \mu_c s_c.

*After* a conv / linear with weight ``W`` (output channel first) and bias ``b``:
``W'[o] = s_o W[o]`` and ``b'_o = s_o b_o + t_o``.

*Before* a conv / linear (an affine on its input channels, DBB transform I/III, Ding et al.
2021, arXiv:2103.13425; RepMLP, arXiv:2105.01883):
``W'[o, i] = W[o, i] s_{c(o,i)}`` and ``b'_o = b_o + \sum_{i,u} W[o, i, u] t_{c(o,i)}``,
where ``c(o, i) = (o // (O/g)) (I/g) + i`` is the input channel that output ``o`` reads
through its local index ``i`` in a conv with ``g`` groups. For a conv this is exact only
when the conv has **no padding** (or ``t = 0``): zero padding is applied *after* the affine
in the original network, so border taps would see ``t`` instead of ``0``.

After a flatten of ``(N, C, a, b)`` to ``(N, C a b)`` a per-channel affine becomes a
per-feature affine whose entries repeat each channel's value ``a b`` times
(RepMLPNet, arXiv:2112.11081).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import (
    check_int,
    check_tensor,
    check_vector,
    grouped_input_map,
    spatial_view,
    work,
)

__all__ = ["fold_affine_after", "fold_affine_before", "norm_to_affine", "repeat_affine"]


def norm_to_affine(
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as ``y = scale * x + shift`` per channel.

    ``weight``/``bias`` may be ``None`` (``affine=False``). Results have the dtype of
    ``running_mean`` and live on its device.
    """
    check_tensor("running_mean", running_mean, ndim=1, floating=True)
    channels = running_mean.shape[0]
    check_vector("running_var", running_var, channels, running_mean)
    if weight is not None:
        check_vector("weight", weight, channels, running_mean)
    if bias is not None:
        check_vector("bias", bias, channels, running_mean)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0.0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    denom = work(running_var) + float(eps)
    if bool((denom <= 0).any()):
        raise ValueError("running_var + eps must be positive in every channel")
    inv_std = torch.rsqrt(denom)
    scale = inv_std if weight is None else work(weight) * inv_std
    shift = -work(running_mean) * scale
    if bias is not None:
        shift = shift + work(bias)
    return scale.to(running_mean.dtype), shift.to(running_mean.dtype)


def _check_weight_and_bias(weight: Tensor, bias: Tensor | None) -> int:
    check_tensor("weight", weight, min_ndim=2, floating=True)
    out_channels = weight.shape[0]
    if bias is not None:
        check_vector("bias", bias, out_channels, weight)
    return out_channels


def fold_affine_after(
    weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor
) -> tuple[Tensor, Tensor]:
    """Fold a per-output-channel affine that follows a conv / linear into it.

    ``weight`` is ``(O, I/g, *k)`` or ``(O, I)``; returns ``(W', b')`` in ``weight``'s dtype.
    """
    out_channels = _check_weight_and_bias(weight, bias)
    check_vector("scale", scale, out_channels, weight)
    check_vector("shift", shift, out_channels, weight)
    s, t = work(scale), work(shift)
    new_weight = work(weight)
    scale = spatial_view(s, weight.dim() - 1)
    # in place on the working copy when work() made one (one float64 copy alive, not two)
    new_weight = new_weight * scale if new_weight is weight else new_weight.mul_(scale)
    new_bias = t if bias is None else s * work(bias) + t
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def fold_affine_before(
    weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor, groups: int = 1
) -> tuple[Tensor, Tensor]:
    """Fold a per-input-channel affine that precedes a conv / linear into it.

    ``scale``/``shift`` have one entry per input channel (``I = weight.shape[1] * groups``).
    Exact for a conv only if the conv has no padding or ``shift == 0`` (caller checks).
    """
    out_channels = _check_weight_and_bias(weight, bias)
    check_int("groups", groups)
    if out_channels % groups:
        raise ValueError(f"out channels {out_channels} not divisible by groups {groups}")
    in_channels = weight.shape[1] * groups
    check_vector("scale", scale, in_channels, weight)
    check_vector("shift", shift, in_channels, weight)
    w = work(weight)
    spatial = weight.dim() - 2
    s_map = spatial_view(grouped_input_map(work(scale), out_channels, groups), spatial)
    t_map = spatial_view(grouped_input_map(work(shift), out_channels, groups), spatial)
    new_weight = w * s_map
    new_bias = (w * t_map).flatten(1).sum(dim=1)
    if bias is not None:
        new_bias = new_bias + work(bias)
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def repeat_affine(scale: Tensor, shift: Tensor, repeats: int) -> tuple[Tensor, Tensor]:
    """Per-channel affine seen after flattening ``(N, C, a, b)``: repeat each entry
    ``repeats = a * b`` times, channel-major."""
    check_tensor("scale", scale, ndim=1, floating=True)
    check_vector("shift", shift, scale.shape[0], scale)
    check_int("repeats", repeats)
    return scale.repeat_interleave(repeats), shift.repeat_interleave(repeats)

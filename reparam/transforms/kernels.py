r"""Kernel layout transforms: zero padding, dilation, diagonal / identity / pooling kernels,
and regrouping.

Maths
-----
A conv is linear in its kernel, so branches that see the same input and are summed can be
merged once their kernels share one shape (RepVGG, arXiv:2101.03697, Sec. 3.3; ACNet,
arXiv:1908.03930):

* **Padding.** A ``k`` kernel placed at offset ``o`` inside zeros of size ``K`` computes, at
  output ``q``, ``sum_u w[u] x[q + o + u]``, i.e. the small conv shifted by ``o``. Centred
  (``o = (K - k) / 2``) it equals the small conv with ``(K - k) / 2`` less padding.
* **Dilation.** A conv with dilation ``d`` reads taps ``x[q + d u]``; it is the dense conv
  with kernel ``w_d[d u] = w[u]`` (zeros elsewhere) of size ``d (k - 1) + 1``
  (RepLKNet, arXiv:2203.06717; UniRepLKNet "Dilated Reparam Block", arXiv:2311.15599).
* **Identity / average pooling** are depthwise convs: a one-hot centre tap, or ``1/prod(k)``
  everywhere (average pooling with ``count_include_pad=True``); as a grouped conv the value
  sits on the "diagonal" ``W[c, c mod (C/g)]`` (RepVGG identity branch; DBB transform VI,
  arXiv:2103.13425).
* **Regrouping.** A conv with ``g_f`` groups is a conv with ``g_t | g_f`` groups whose
  weight is block diagonal inside each of the ``g_t`` groups (DBB, arXiv:2103.13425).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import check_dtype, check_int, check_sizes, check_tensor

__all__ = [
    "avgpool_kernel",
    "center_pad_kernel",
    "diagonal_kernel",
    "dilate_kernel",
    "identity_kernel",
    "pad_kernel",
    "regroup_kernel",
]


def _check_conv_weight(weight: Tensor) -> int:
    check_tensor("weight", weight, min_ndim=3)
    return weight.dim() - 2


def pad_kernel(weight: Tensor, target_size: Sequence[int], offset: Sequence[int]) -> Tensor:
    """Place the ``(O, I, *k)`` kernel at ``offset`` inside zeros of spatial ``target_size``."""
    nd = _check_conv_weight(weight)
    target = check_sizes("target_size", target_size, nd, minimum=1)
    start = check_sizes("offset", offset, nd, minimum=0)
    kernel = tuple(weight.shape[2:])
    for dim, (t, o, k) in enumerate(zip(target, start, kernel, strict=True)):
        if o + k > t:
            raise ValueError(
                f"kernel size {k} at offset {o} does not fit in target size {t} (dim {dim})"
            )
    out = weight.new_zeros((*weight.shape[:2], *target))
    window = tuple(slice(o, o + k) for o, k in zip(start, kernel, strict=True))
    out[(slice(None), slice(None), *window)] = weight
    return out


def center_pad_kernel(weight: Tensor, target_size: Sequence[int]) -> Tensor:
    """Zero-pad the kernel symmetrically to ``target_size`` (each ``target - k`` even, >= 0)."""
    nd = _check_conv_weight(weight)
    target = check_sizes("target_size", target_size, nd, minimum=1)
    offset = []
    for dim, (t, k) in enumerate(zip(target, weight.shape[2:], strict=True)):
        if t < k or (t - k) % 2:
            raise ValueError(
                f"cannot centre kernel size {k} in target size {t} (dim {dim}): "
                "the difference must be even and non-negative"
            )
        offset.append((t - k) // 2)
    return pad_kernel(weight, target, offset)


def dilate_kernel(weight: Tensor, dilation: Sequence[int]) -> Tensor:
    """Dense kernel of size ``d * (k - 1) + 1`` equal to ``weight`` applied with ``dilation``."""
    nd = _check_conv_weight(weight)
    dil = check_sizes("dilation", dilation, nd, minimum=1)
    size = tuple(d * (k - 1) + 1 for d, k in zip(dil, weight.shape[2:], strict=True))
    out = weight.new_zeros((*weight.shape[:2], *size))
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dil))] = weight
    return out


def diagonal_kernel(values: Tensor, groups: int) -> Tensor:
    """Weight ``(C, C/g, *k)`` of a ``groups``-group conv where channel ``c`` reads only input
    channel ``c`` with kernel ``values[c]`` (``values`` is ``(C, *k)``)."""
    check_tensor("values", values, min_ndim=2)
    check_int("groups", groups)
    channels = values.shape[0]
    if channels % groups:
        raise ValueError(f"channels {channels} not divisible by groups {groups}")
    per_group = channels // groups
    out = values.new_zeros((channels, per_group, *values.shape[1:]))
    rows = torch.arange(channels, dtype=torch.long, device=values.device)
    out[rows, rows % per_group] = values
    return out


def _depthwise_values(
    channels: int,
    groups: int,
    kernel_size: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
) -> tuple[Tensor, tuple[int, ...]]:
    """Validate the arguments; return zeros ``(C, *k)`` and the kernel size."""
    check_int("channels", channels)
    check_int("groups", groups)
    if channels % groups:
        raise ValueError(f"channels {channels} not divisible by groups {groups}")
    if (
        isinstance(kernel_size, (str, bytes))
        or not isinstance(kernel_size, Sequence)
        or not kernel_size
    ):
        raise ValueError(f"kernel_size must be a non-empty sequence of ints, got {kernel_size!r}")
    size = check_sizes("kernel_size", kernel_size, len(kernel_size), minimum=1)
    check_dtype(dtype)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}") from err
    return torch.zeros((channels, *size), dtype=dtype, device=dev), size


def identity_kernel(
    channels: int,
    groups: int,
    kernel_size: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Kernel of a ``groups``-group conv that is the identity (odd kernel sizes, centred)."""
    values, size = _depthwise_values(channels, groups, kernel_size, dtype, device)
    if any(k % 2 == 0 for k in size):
        raise ValueError(f"identity kernel needs odd kernel sizes, got {size}")
    values[(slice(None), *(k // 2 for k in size))] = 1
    return diagonal_kernel(values, groups)


def avgpool_kernel(
    channels: int,
    groups: int,
    kernel_size: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Average pooling (``count_include_pad=True``) as a conv kernel; use the pool's stride
    and padding for the conv."""
    values, size = _depthwise_values(channels, groups, kernel_size, dtype, device)
    values.fill_(1.0 / math.prod(size))
    return diagonal_kernel(values, groups)


def regroup_kernel(weight: Tensor, groups_from: int, groups_to: int) -> Tensor:
    """Express a ``groups_from``-group conv weight as a ``groups_to``-group one
    (``groups_from % groups_to == 0``) by block-diagonal expansion with zeros."""
    _check_conv_weight(weight)
    check_int("groups_from", groups_from)
    check_int("groups_to", groups_to)
    if groups_from % groups_to:
        raise ValueError(f"groups_from {groups_from} not divisible by groups_to {groups_to}")
    out_channels, in_per_group = weight.shape[:2]
    if out_channels % groups_from:
        raise ValueError(f"out channels {out_channels} not divisible by groups {groups_from}")
    ratio = groups_from // groups_to
    out_per_group = out_channels // groups_from
    kernel = tuple(weight.shape[2:])
    blocks = weight.reshape(groups_to, ratio, out_per_group, in_per_group, *kernel)
    out = weight.new_zeros((groups_to, ratio, out_per_group, ratio, in_per_group, *kernel))
    for j in range(ratio):
        out[:, j, :, j] = blocks[:, j]
    return out.reshape(out_channels, ratio * in_per_group, *kernel)

"""Shared argument checks and dtype handling for :mod:`reparam.transforms`.

Every transform computes in ``float64`` when its inputs are floating point and casts the
result back to the dtype and device of its primary input. Nothing here ever creates a tensor
in the default dtype or on the default device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

WORK_DTYPE = torch.float64


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    floating: bool = False,
) -> Tensor:
    """Raise ``ValueError`` unless ``t`` is a tensor of the requested rank (and kind)."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}"
        )
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    return t


def check_vector(name: str, t: object, length: int, ref: Tensor) -> Tensor:
    """Raise unless ``t`` is a floating 1-D tensor of ``length`` on ``ref``'s device."""
    check_tensor(name, t, ndim=1, floating=True)
    assert isinstance(t, Tensor)
    if t.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {t.shape[0]}")
    check_same_device(name, t, ref)
    return t


def check_same_device(name: str, t: Tensor, ref: Tensor) -> None:
    """Raise unless ``t`` lives on the same device as ``ref``."""
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device}, expected {ref.device}")


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` (not bool) ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_sizes(name: str, values: Sequence[int], length: int, *, minimum: int) -> tuple[int, ...]:
    """Validate a per-spatial-dimension sequence of ints."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of ints, got {values!r}")
    if len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}: {tuple(values)}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values))


def check_dtype(dtype: object) -> torch.dtype:
    """Raise unless ``dtype`` is a floating ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def work(t: Tensor) -> Tensor:
    """``t`` in the working precision (float64 for floating tensors)."""
    return t.to(WORK_DTYPE) if t.is_floating_point() else t


def grouped_input_map(values: Tensor, out_channels: int, groups: int) -> Tensor:
    """Spread a per-input-channel vector over a grouped weight's ``(O, I/g)`` layout.

    Entry ``[o, i]`` is ``values[(o // (O/g)) * (I/g) + i]``, the input channel that output
    channel ``o`` reads through its local input index ``i``.
    """
    per_group_in = values.shape[0] // groups
    per_group_out = out_channels // groups
    grid = values.reshape(groups, 1, per_group_in).expand(groups, per_group_out, per_group_in)
    return grid.reshape(out_channels, per_group_in)


def spatial_view(t: Tensor, ndim: int) -> Tensor:
    """Append ``ndim`` trailing singleton dims so ``t`` broadcasts against a kernel."""
    return t.reshape(*t.shape, *([1] * ndim))

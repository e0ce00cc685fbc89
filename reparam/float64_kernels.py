"""Faster float64 paths for the check's runs, for calls PyTorch's CPU kernels serve slowly.

PyTorch's CPU convolution has no oneDNN path for float64: a float64 ``conv2d`` goes through
im2col and a generic kernel. For a 1×1 kernel that is a matrix product done the slow way —
RepMLP's FC, a ``Conv2d(C·h·w, O·h·w, 1)`` over a batch of flattened patches, runs about six
times slower as a float64 ``conv2d`` than as the same product by ``torch.matmul`` (3136×3136
weight, batch 96: 0.31 s against 0.05 s on one core). The float64 check runs every such layer
twice per nesting level, so the check of a RepMLP model was mostly this one kernel.

A 1×1 convolution with stride 1 and no padding over one-pixel maps is an FC applied to a
batch: ``y[n, o] = Σ_c W[o, c] x[n, c] + b[o]`` (per group, with ``groups``).
:func:`pointwise_conv2d` computes exactly that with one (batched) ``matmul``. In float64 the
two differ only by the order of rounding (relative 1e-16), far below the check's 1e-9. Over
maps of many pixels torch's kernel already is a matrix product per sample (measured: no
faster by ``matmul``), so only one-pixel maps take this path, in float64 on the CPU in the
plain layout; anything else (other kernels, strides, padding, layouts, shapes that do not fit)
returns ``None`` and the caller runs ``torch.conv2d`` itself, errors included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_CONV2D_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV2D_DEFAULTS: dict[str, Any] = {"bias": None, "stride": 1, "padding": 0, "groups": 1}


def _is_one(value: Any) -> bool:
    if isinstance(value, int):
        return value == 1
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(v == 1 for v in value)


def _is_zero_padding(value: Any) -> bool:
    if isinstance(value, str):
        return value in ("valid", "same")  # a 1×1 kernel needs no padding for "same"
    if isinstance(value, int):
        return value == 0
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(v == 0 for v in value)


def _bind_conv2d(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    if len(args) > len(_CONV2D_PARAMETERS) or any(k not in _CONV2D_PARAMETERS for k in kwargs):
        return None
    bound = dict(_CONV2D_DEFAULTS)
    bound.update(zip(_CONV2D_PARAMETERS, args, strict=False))
    for key, value in kwargs.items():
        if key in bound and key not in _CONV2D_DEFAULTS:
            return None  # given twice: torch raises
        bound[key] = value
    return bound if "input" in bound and "weight" in bound else None


def pointwise_conv2d(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``torch.conv2d(*args, **kwargs)`` for a float64 1×1 kernel with stride 1 and no padding
    over one-pixel maps, as one matrix product; ``None`` where the call is not of that kind."""
    bound = _bind_conv2d(args, kwargs)
    if bound is None:
        return None
    x, w, b, groups = bound["input"], bound["weight"], bound["bias"], bound["groups"]
    tensors = (x, w) if b is None else (x, w, b)
    if not all(type(t) is torch.Tensor for t in tensors):
        return None
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in tensors):
        return None
    if not (isinstance(groups, int) and groups >= 1 and _is_one(bound["stride"])):
        return None
    if not _is_zero_padding(bound["padding"]):
        return None  # dilation does not matter for a 1×1 kernel
    if w.dim() != 4 or w.shape[2:] != (1, 1) or x.dim() not in (3, 4):
        return None
    if not (x.is_contiguous() and w.is_contiguous()):
        return None
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    n, c, h, width = x.shape
    o, c_per_group = w.shape[0], w.shape[1]
    if c != c_per_group * groups or o % groups or (b is not None and b.shape != (o,)):
        return None
    if h * width != 1:
        return None  # over many pixels torch's kernel is this same product already
    # every sample's one pixel is a row: rows @ W_gᵀ per group, all samples at once
    rows = x.reshape(n, groups, c_per_group).transpose(0, 1)
    weights = w.reshape(groups, o // groups, c_per_group).transpose(1, 2)
    out = torch.matmul(rows, weights).transpose(0, 1).reshape(n, o, 1, 1)
    out = out.contiguous()  # a fresh tensor of this call's own
    if b is not None:
        out.add_(b.view(1, o, 1, 1))
    return out.squeeze(0) if unbatched else out


# torch function -> its faster float64 path (``torch.nn.functional.conv2d is torch.conv2d``)
KERNELS: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor | None]] = {
    torch.conv2d: pointwise_conv2d,
}

__all__ = ["KERNELS", "pointwise_conv2d"]

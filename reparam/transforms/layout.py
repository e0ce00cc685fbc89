r"""Per-channel affines across layout changes (permute / reshape / flatten / transpose).

Maths
-----
A layout op ``L`` (a permute, a row-major reshape, a flatten, a transpose) moves elements and
computes nothing: ``L(z)[q] = z[\pi(q)]`` for a bijection :math:`\pi` of the element
indices. An elementwise affine therefore commutes with it after re-indexing its parameters:

.. math:: s \odot L(z) + t = L\big(\pi^{-1}(s) \odot z + \pi^{-1}(t)\big),

where :math:`\pi^{-1}(s)` is ``s`` (broadcast to ``L(z)``'s shape) sent back to ``z``'s
element positions. Replaying ``L`` on the index tensor ``arange(numel).reshape(shape)``
gives :math:`\pi` itself. A per-channel affine (a batch norm in eval mode, on dim 1 of its
input) folds into a conv / linear *after* the layout op exactly when the pulled-back scale
and shift are per-channel for that layer: constant along every axis but its channel axis
(dim 1 of a conv's output, the last dim of a linear's). Before a layer, the affine is pushed
*forward* through the layout op (``L`` applied to the broadcast parameters) and must be
per-channel on the layer's input. E.g. ``Linear -> permute(0, 3, 1, 2) -> BatchNorm2d``
(UniRepLKNet, arXiv:2311.15599; ConvNeXt-style MLPs, arXiv:2201.03545) pulls back to a
per-feature affine on the linear's last dim; ``conv -> flatten -> BatchNorm1d(C h w)`` pulls
back to a per-(channel, position) affine, which a conv can absorb only when it does not
vary over positions (always when ``h w = 1``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._common import check_tensor

__all__ = ["axis_vector", "broadcast_on_axis", "pull_back", "push_forward"]

Layout = Callable[[Tensor], Tensor]


def broadcast_on_axis(values: Tensor, shape: tuple[int, ...], axis: int) -> Tensor:
    """``values`` (one entry per index of ``axis``) broadcast to the full ``shape``."""
    check_tensor("values", values, ndim=1)
    axis = axis % len(shape)
    if values.shape[0] != shape[axis]:
        raise ValueError(f"{values.shape[0]} values for axis {axis} of size {shape[axis]}")
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return values.reshape(view).expand(shape)


def pull_back(full: Tensor, layout: Layout, in_shape: tuple[int, ...]) -> Tensor:
    """Parameters ``full`` (given on ``layout``'s output) sent back to its input positions.

    ``layout`` must only move elements (a bijection of positions); ValueError otherwise.
    """
    numel = 1
    for s in in_shape:
        numel *= s
    index = layout(torch.arange(numel, device=full.device).reshape(in_shape))
    if tuple(index.shape) != tuple(full.shape):
        raise ValueError(f"layout gives {tuple(index.shape)}, parameters are {tuple(full.shape)}")
    flat = index.reshape(-1)
    expected = torch.arange(numel, device=flat.device)
    if flat.numel() != numel or not torch.equal(flat.sort().values, expected):
        raise ValueError("the layout op is not a permutation of the elements")
    out = full.new_empty(numel)
    out[flat] = full.reshape(-1)
    return out.reshape(in_shape)


def push_forward(full: Tensor, layout: Layout) -> Tensor:
    """Parameters ``full`` (given on ``layout``'s input) at their positions in its output."""
    return layout(full)


def axis_vector(full: Tensor, axis: int) -> Tensor | None:
    """The vector ``v`` with ``full == broadcast_on_axis(v, full.shape, axis)``, exactly, or
    None when ``full`` varies along another axis."""
    if full.dim() == 0:
        return None
    moved = full.movedim(axis % full.dim(), 0).reshape(full.shape[axis], -1)
    if moved.shape[1] == 0:
        return None
    first = moved[:, :1]
    if not bool((moved == first).all()):
        return None
    return first.reshape(-1).clone()

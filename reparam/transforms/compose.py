r"""Sequential composition of two convs into one (DBB transform III, Ding et al. 2021,
"Diverse Branch Block", arXiv:2103.13425; used for 1x1-then-KxK branches and by RepMLP,
arXiv:2105.01883).

Maths
-----
With stride 1 and dilation 1, conv1 (weight ``w1``, ``M x I x k1``, bias ``b1``) followed by
conv2 (``w2``, ``O x M x k2``, bias ``b2``) is

.. math:: y_o(q) = \sum_i \sum_s K[o, i, s]\, x_i(q + s) + \beta_o,\quad
          K[o, i, s] = \sum_m \sum_{u + v = s} w_2[o, m, v]\, w_1[m, i, u],\quad
          \beta_o = b_{2,o} + \sum_{m, v} w_2[o, m, v]\, b_{1,m},

a single conv of kernel size ``k1 + k2 - 1``: ``K`` is the full convolution of the two
kernels summed over the middle channel. Grouped convs are first regrouped to
``g = gcd(g1, g2)`` groups (exact, block-diagonal zeros); the result has ``g`` groups.

Exactness (the caller must check)
---------------------------------
* conv1 must have **no padding**, stride 1 and dilation 1; conv2 dilation 1. conv2 may
  stride: the merged conv takes conv2's stride (``y(q) = \sum_v w_2[v] y_1(s q + v)``).
* If conv2 has padding ``p > 0`` the composite uses padding ``p`` on ``x``, but the original
  zero-pads conv1's *output*. They agree only when conv1 is ``1 x 1`` (spatially all ones)
  **and** the padded intermediate equals conv1 applied to zeros, i.e. ``b1 == 0`` — or the
  intermediate is padded with ``b1`` instead of zeros (DBB's ``BNAndPadLayer``). With a
  larger conv1 kernel and ``p > 0`` the border differs whatever ``b1`` is.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from ._common import (
    check_int,
    check_same_device,
    check_tensor,
    check_vector,
    grouped_input_map,
    spatial_view,
    work,
)
from .kernels import regroup_kernel

__all__ = ["compose_sequential"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def compose_sequential(
    w1: Tensor, b1: Tensor | None, groups1: int, w2: Tensor, b2: Tensor | None, groups2: int
) -> tuple[Tensor, Tensor, int]:
    """Merge conv1 then conv2 (dilation 1; conv1 stride 1 and unpadded) into one conv.

    Returns ``(weight, bias, groups)``: kernel size ``k1 + k2 - 1``, ``groups = gcd(g1, g2)``,
    in ``w1``'s dtype. The merged conv takes conv2's stride and padding (see the module
    docstring for when padding is exact).
    """
    check_tensor("w1", w1, min_ndim=3, floating=True)
    check_tensor("w2", w2, min_ndim=3, floating=True)
    check_same_device("w2", w2, w1)
    nd = w1.dim() - 2
    if w2.dim() != w1.dim():
        raise ValueError(f"w1 and w2 differ in rank: {tuple(w1.shape)} vs {tuple(w2.shape)}")
    if nd not in _CONV:
        raise ValueError(f"only 1-, 2- and 3-d convs are supported, got {nd} spatial dims")
    check_int("groups1", groups1)
    check_int("groups2", groups2)
    mid, out = w1.shape[0], w2.shape[0]
    if mid % groups1:
        raise ValueError(f"conv1 out channels {mid} not divisible by groups1 {groups1}")
    if out % groups2:
        raise ValueError(f"conv2 out channels {out} not divisible by groups2 {groups2}")
    if w2.shape[1] * groups2 != mid:
        raise ValueError(f"conv2 expects {w2.shape[1] * groups2} input channels, conv1 gives {mid}")
    if b1 is not None:
        check_vector("b1", b1, mid, w1)
    if b2 is not None:
        check_vector("b2", b2, out, w1)

    groups = math.gcd(groups1, groups2)
    k1 = regroup_kernel(work(w1), groups1, groups)  # (M, I/g, *k1)
    k2 = regroup_kernel(work(w2), groups2, groups)  # (O, M/g, *k2)
    in_g, mid_g, out_g = k1.shape[1], mid // groups, out // groups
    # Per group: K[o, i] = conv(w2[o] as input, flip(w1)^T as weight, padding k1 - 1).
    inputs = k2.reshape(groups, out_g, mid_g, *k2.shape[2:]).transpose(0, 1)
    inputs = inputs.reshape(out_g, groups * mid_g, *k2.shape[2:])
    kernel = k1.flip(list(range(2, 2 + nd))).reshape(groups, mid_g, in_g, *k1.shape[2:])
    kernel = kernel.transpose(1, 2).reshape(groups * in_g, mid_g, *k1.shape[2:])
    padding = tuple(k - 1 for k in k1.shape[2:])
    merged = _CONV[nd](inputs, kernel, None, 1, padding, 1, groups)
    merged = merged.reshape(out_g, groups, in_g, *merged.shape[2:]).transpose(0, 1)
    weight = merged.reshape(out, in_g, *merged.shape[3:])

    bias = weight.new_zeros(out) if b2 is None else work(b2)
    if b1 is not None:
        b1_map = spatial_view(grouped_input_map(work(b1), out, groups2), nd)
        bias = bias + (work(w2) * b1_map).flatten(1).sum(dim=1)
    return weight.to(w1.dtype), bias.to(w1.dtype), groups

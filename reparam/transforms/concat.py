r"""Channel concatenation of parallel convs (DBB, Ding et al. 2021, arXiv:2103.13425,
transform IV "depth concatenation").

Maths
-----
Convs ``(W_j, b_j)`` with ``groups = 1``, the same input, stride, padding, dilation and
spatial kernel size, whose outputs are concatenated along channels, are one conv:

.. math:: \mathrm{cat}_j(W_j * x + b_j) = \mathrm{cat}_j(W_j) * x + \mathrm{cat}_j(b_j).

Pad smaller kernels first (``kernels.center_pad_kernel``, with matching padding changes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import check_tensor, check_vector

__all__ = ["concat_kernels"]


def concat_kernels(
    weights: Sequence[Tensor], biases: Sequence[Tensor | None]
) -> tuple[Tensor, Tensor]:
    """Stack the weights / biases of channel-concatenated ``groups=1`` convs.

    All weights must share shape past dim 0, dtype and device; ``None`` biases are zeros.
    """
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence) or not weights:
        raise ValueError("weights must be a non-empty sequence of tensors")
    if isinstance(biases, Tensor) or not isinstance(biases, Sequence):
        raise ValueError("biases must be a sequence of tensors or None")
    if len(biases) != len(weights):
        raise ValueError(f"got {len(weights)} weights but {len(biases)} biases")
    first = check_tensor("weights[0]", weights[0], min_ndim=2, floating=True)
    out_bias = []
    for j, (w, b) in enumerate(zip(weights, biases, strict=True)):
        check_tensor(f"weights[{j}]", w, min_ndim=2, floating=True)
        if w.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"weights[{j}] has shape {tuple(w.shape)}, incompatible with "
                f"{tuple(first.shape)} (all but dim 0 must match)"
            )
        if w.dtype != first.dtype or w.device != first.device:
            raise ValueError(
                f"weights[{j}] is {w.dtype} on {w.device}, expected {first.dtype} on {first.device}"
            )
        if b is None:
            out_bias.append(w.new_zeros(w.shape[0]))
        else:
            out_bias.append(check_vector(f"biases[{j}]", b, w.shape[0], first).to(first.dtype))
    return torch.cat(list(weights), dim=0), torch.cat(out_bias, dim=0)

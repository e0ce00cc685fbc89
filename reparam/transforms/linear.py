r"""Linear layers summed with scalar coefficients (RepViT / LeViT's averaged heads).

.. math:: \sum_t c_t (W_t x + b_t) = \Big(\sum_t c_t W_t\Big) x + \sum_t c_t b_t
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import check_tensor, check_vector, work

__all__ = ["merge_linears"]


def merge_linears(
    weights: Sequence[Tensor], biases: Sequence[Tensor | None], coefs: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """``(sum c_t W_t, sum c_t b_t)`` in float64, returned in the first weight's dtype."""
    if not weights or len(weights) != len(biases) or len(weights) != len(coefs):
        raise ValueError("need one bias (or None) and one coefficient per weight")
    like = check_tensor("weights[0]", weights[0], ndim=2, floating=True)
    weight = torch.zeros(like.shape, dtype=torch.float64, device=like.device)
    bias = torch.zeros(like.shape[0], dtype=torch.float64, device=like.device)
    for i, (w, b, c) in enumerate(zip(weights, biases, coefs, strict=True)):
        check_tensor(f"weights[{i}]", w, ndim=2, floating=True)
        if w.shape != like.shape:
            raise ValueError(
                f"weights[{i}] has shape {tuple(w.shape)}, expected {tuple(like.shape)}"
            )
        weight = weight + float(c) * work(w)
        if b is not None:
            bias = bias + float(c) * work(check_vector(f"biases[{i}]", b, like.shape[0], like))
    return weight.to(like.dtype), bias.to(like.dtype)

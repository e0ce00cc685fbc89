r"""Per-channel affine after a transposed convolution.

A transposed conv with ``g`` groups stores its weight as ``(C_in, C_out/g, *k)``: output
channel ``o`` of group ``j`` is column ``o - j C_out/g`` of the rows ``j C_in/g ...
(j+1) C_in/g``. A per-output-channel affine ``s (W^T * x + b) + t`` scales those columns:

.. math:: W'[i, o'] = s_{j(i) C_{out}/g + o'}\, W[i, o'],\qquad b' = s b + t,
          \quad j(i) = \lfloor i / (C_{in}/g) \rfloor

Exact for any stride, padding, output_padding and dilation (the affine acts after all of
them, channel by channel). Source: the BN fusion of RepVGG (arXiv:2101.03697, Sec. 3.3)
applied to the transposed layout used by decoders / upsamplers.
"""

from __future__ import annotations

from torch import Tensor

from ._common import check_int, check_tensor, check_vector, spatial_view, work

__all__ = ["fold_affine_after_transposed"]


def fold_affine_after_transposed(
    weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor, groups: int = 1
) -> tuple[Tensor, Tensor]:
    """Fold ``scale * y + shift`` (per output channel) into a transposed conv's weight
    ``(C_in, C_out/g, *k)`` and bias; returns ``(W', b')`` in ``weight``'s dtype."""
    check_tensor("weight", weight, min_ndim=3, floating=True)
    check_int("groups", groups)
    in_channels, per_group = weight.shape[:2]
    if in_channels % groups:
        raise ValueError(f"in channels {in_channels} not divisible by groups {groups}")
    out_channels = per_group * groups
    check_vector("scale", scale, out_channels, weight)
    check_vector("shift", shift, out_channels, weight)
    if bias is not None:
        check_vector("bias", bias, out_channels, weight)
    s, t = work(scale), work(shift)
    # row i of the weight belongs to group i // (C_in/g); its columns are that group's outputs
    rows = s.reshape(groups, 1, per_group).expand(groups, in_channels // groups, per_group)
    rows = rows.reshape(in_channels, per_group)
    new_weight = work(weight) * spatial_view(rows, weight.dim() - 2)
    new_bias = t if bias is None else s * work(bias) + t
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)

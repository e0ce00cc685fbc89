r"""Locality Injection: a conv on a fixed-size map as a fully connected layer
(RepMLP, Ding et al. 2021, arXiv:2105.01883, Sec. 3.3; RepMLPNet, arXiv:2112.11081).

Maths
-----
With stride 1 and "same" zero padding (``2 p = d (k - 1)`` per dim, so the output is
``h x w`` like the input) a conv is linear in its input, so on an ``h x w`` map it is a
matrix acting on the flattened map. Group ``j`` maps its ``I_g h w`` inputs to its
``O_g h w`` outputs:

.. math:: \mathrm{FC}_j[(o, y, x), (i, y', x')] = \mathrm{conv}_j(e_{(i, y', x')})[o, y, x],

the response to the one-hot basis ``e``. The papers push the identity basis (a batch of
``I_g h w`` one-hot maps) through the conv; the response is known in closed form, so
:func:`conv_to_fc` writes it directly: output ``(o, y, x)`` reads input
``(i, y + k_y d_y - p_y, x + k_x d_x - p_x)`` with weight ``W_j[o, i, k_y, k_x]`` for every tap
``(k_y, k_x)`` whose input lies on the map (the other entries are zero, the padding). That is
the same matrix, entry for entry, without running ``I_g h w`` convs (``h w`` times fewer
operations). The conv bias becomes ``b_o`` repeated over the ``h w`` positions. A
``groups``-group conv is a block-diagonal FC with ``groups`` blocks.

**Injection.** Convs ``k`` and ``n`` identities on the partitions ``P`` that the FC reads
flattened, summed with the FC's output, are one FC:

.. math:: W p + b + \sum_k (M_k p + \beta_k) + n p
          = \big(W + \sum_k M_k + n I\big) p + \big(b + \sum_k \beta_k\big)

with ``p = vec P``. Blockwise, a ``g_k``-group conv whose groups refine the FC's ``g`` adds
``block_diag`` of its ``g_k / g`` blocks to each of the FC's ``g`` blocks (:func:`inject_convs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._common import (
    check_int,
    check_sizes,
    check_tensor,
    check_vector,
    work,
)

if TYPE_CHECKING:
    from reparam.convspec import ConvSpec

__all__ = [
    "conv_to_fc",
    "dense_to_grouped_fc",
    "fc_as_dense",
    "grouped_fc_to_dense",
    "inject_convs",
]


def conv_to_fc(
    weight: Tensor,
    bias: Tensor | None,
    h: int,
    w: int,
    padding: Sequence[int],
    groups: int,
    dilation: Sequence[int] = (1, 1),
    *,
    chunk_elements: int = 2**22,
) -> tuple[Tensor, Tensor]:
    """A stride-1 "same" 2-D conv on an ``h x w`` map as grouped FC blocks.

    Returns ``fc_weight`` of shape ``(groups, O_g*h*w, I_g*h*w)`` (rows ``(o, y, x)``,
    columns ``(i, y', x')`` within the group) and ``fc_bias`` of shape ``(O*h*w,)``. Each
    tap's weights are written on the entries it connects (module docstring), so every entry
    is a weight of the conv or zero. ``chunk_elements`` (a positive int) is accepted for
    callers of the earlier version, which pushed the basis through the conv in chunks of
    that many values; the construction needs no chunks.
    """
    check_int("h", h)
    check_int("w", w)
    check_int("chunk_elements", chunk_elements)
    pad, dil = _check_same_conv(weight, bias, padding, groups, dilation)
    out_channels, in_per_group, *kernel = weight.shape
    out_per_group = out_channels // groups
    taps = work(weight).reshape(groups, out_per_group, in_per_group, *kernel)
    # fc[j, o, y, x, i, y', x']: output (o, y, x) of group j reading input (i, y', x'), laid
    # out as the returned (groups, rows, cols)
    fc = taps.new_zeros((groups, out_per_group, h, w, in_per_group, h, w))
    _write_taps(fc, taps, pad, dil, accumulate=False)
    rows, cols = out_per_group * h * w, in_per_group * h * w
    fc = fc.reshape(groups, rows, cols).to(weight.dtype)
    if bias is None:
        fc_bias = weight.new_zeros(out_channels * h * w)
    else:
        fc_bias = bias.to(weight.dtype).repeat_interleave(h * w)
    return fc, fc_bias


def _check_same_conv(
    weight: Tensor,
    bias: Tensor | None,
    padding: Sequence[int],
    groups: int,
    dilation: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``ValueError`` unless the conv is a 2-D stride-1 conv that keeps the map size
    (``2 p = d (k - 1)``); returns its padding and dilation."""
    check_tensor("weight", weight, ndim=4, floating=True)
    check_int("groups", groups)
    pad = check_sizes("padding", padding, 2, minimum=0)
    dil = check_sizes("dilation", dilation, 2, minimum=1)
    out_channels, _, *kernel = weight.shape
    if out_channels % groups:
        raise ValueError(f"out channels {out_channels} not divisible by groups {groups}")
    for dim, (p, d, k) in enumerate(zip(pad, dil, kernel, strict=True)):
        if 2 * p != d * (k - 1):
            raise ValueError(
                f"conv must preserve the map size: need 2*padding == dilation*(k-1) in dim "
                f"{dim}, got padding={p}, dilation={d}, k={k}"
            )
    if bias is not None:
        check_vector("bias", bias, out_channels, weight)
    return pad, dil


def _write_taps(
    fc: Tensor, taps: Tensor, pad: Sequence[int], dil: Sequence[int], *, accumulate: bool
) -> None:
    """Write (or add) each tap's weights ``taps[..., o, i, k_y, k_x]`` on the entries
    ``fc[..., o, y, x, i, y + k_y d_y - p_y, x + k_x d_x - p_x]`` whose input lies on the map.
    ``fc`` may be a strided view (its base is written); the entries of two taps never meet."""
    *_, h, w = fc.shape
    kernel = taps.shape[-2:]
    for ky in range(kernel[0]):
        dy = ky * dil[0] - pad[0]
        y0, y1 = max(0, -dy), min(h, h - dy)  # the rows whose input row y + dy is on the map
        for kx in range(kernel[1]):
            dx = kx * dil[1] - pad[1]
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y0 >= y1 or x0 >= x1:
                continue  # this tap reads only padding
            y = torch.arange(y0, y1, device=fc.device)[:, None]
            x = torch.arange(x0, x1, device=fc.device)[None, :]
            # the indexed positions come first: (rows of y, cols of x, *lead, O_g, I_g)
            index = (..., y, x, slice(None), y + dy, x + dx)
            if accumulate:
                fc[index] += taps[..., ky, kx]
            else:
                fc[index] = taps[..., ky, kx]


def grouped_fc_to_dense(blocks: Tensor) -> Tensor:
    """Block-diagonal ``(g*R, g*C)`` matrix from ``(g, R, C)`` blocks."""
    check_tensor("blocks", blocks, ndim=3)
    return torch.block_diag(*blocks.unbind(0))


def fc_as_dense(weight: Tensor, bias: Tensor | None, groups: int = 1) -> tuple[Tensor, Tensor]:
    """An FC's weight (a linear's ``(O, I)`` or a grouped 1x1 conv's ``(O, I/g, 1, 1)``) as
    the dense float64 ``(O, I)`` matrix it applies (block diagonal for ``groups > 1``), and its
    bias in float64 (zeros when ``None``)."""
    check_tensor("weight", weight, min_ndim=2, floating=True)
    check_int("groups", groups)
    out = weight.shape[0]
    if out % groups:
        raise ValueError(f"out features {out} not divisible by groups {groups}")
    dense = work(weight).reshape(out, -1)
    if groups > 1:
        dense = grouped_fc_to_dense(dense.reshape(groups, out // groups, -1))
    if bias is None:
        return dense, dense.new_zeros(out)
    return dense, work(check_vector("bias", bias, out, weight))


def dense_to_grouped_fc(matrix: Tensor, groups: int) -> Tensor:
    """Split a block-diagonal ``(g*R, g*C)`` matrix into ``(g, R, C)`` blocks.

    Raises ``ValueError`` if an entry outside the diagonal blocks is non-zero.
    """
    check_tensor("matrix", matrix, ndim=2)
    check_int("groups", groups)
    rows, cols = matrix.shape
    if rows % groups or cols % groups:
        raise ValueError(f"matrix shape {tuple(matrix.shape)} not divisible by groups {groups}")
    r, c = rows // groups, cols // groups
    tiles = matrix.reshape(groups, r, groups, c).permute(0, 2, 1, 3)  # (g, g, r, c)
    idx = torch.arange(groups, dtype=torch.long, device=matrix.device)
    blocks = tiles[idx, idx]
    if groups > 1 and bool(tiles.ne(0).any(dim=(2, 3)).fill_diagonal_(False).any()):
        raise ValueError("matrix has non-zero entries outside its diagonal blocks")
    return blocks.contiguous()


def inject_convs(
    blocks: Tensor,
    bias: Tensor | None,
    convs: Sequence[ConvSpec],
    h: int,
    w: int,
    identities: int = 0,
) -> tuple[Tensor, Tensor]:
    """The FC (``groups`` blocks ``(g, O_g*h*w, C_g*h*w)`` and bias ``(O*h*w,)``) that also
    computes the stride-1 "same" zero-padded ``convs`` and ``identities`` copies of its input
    on ``h x w`` partitions (all summed). Float64 results; ``None`` bias is zeros.

    Every conv must map the FC's ``C`` partition channels to its ``O`` and have groups that
    the FC's ``g`` divides; ``identities`` need ``C == O``. ``ValueError`` otherwise.
    """
    check_tensor("blocks", blocks, ndim=3, floating=True)
    groups, rows, cols = blocks.shape
    out = work(blocks)
    if out is blocks:
        out = out.clone()
    total = out.new_zeros(groups * rows) if bias is None else work(bias).clone()
    if total.shape != (groups * rows,):
        raise ValueError(f"bias has shape {tuple(total.shape)}, expected ({groups * rows},)")
    for spec in convs:
        if spec.groups % groups:
            raise ValueError(f"conv groups {spec.groups} do not refine the FC's {groups} groups")
        if spec.out_channels * h * w != groups * rows or spec.in_channels * h * w != groups * cols:
            raise ValueError("a conv's channels differ from the FC's partitions")
        pad, dil = _check_same_conv(
            spec.weight, spec.bias, [left for left, _ in spec.padding], spec.groups, spec.dilation
        )
        # each FC block j holds r = g_k / g conv groups on its diagonal: view those diagonal
        # blocks as (g, r, O_k, h, w, I_k, h, w) and add the conv's taps into them in place
        # (no dense copy of the conv's matrix)
        r = spec.groups // groups
        o_k, i_k = spec.out_channels // spec.groups, spec.in_channels // spec.groups
        diagonal = out.view(groups, r, o_k * h * w, r, i_k * h * w).diagonal(dim1=1, dim2=3)
        diagonal = diagonal.movedim(-1, 1).unflatten(2, (o_k, h, w)).unflatten(5, (i_k, h, w))
        taps = work(spec.weight).reshape(groups, r, o_k, i_k, *spec.weight.shape[-2:])
        _write_taps(diagonal, taps, pad, dil, accumulate=True)
        if spec.bias is not None:
            total += work(spec.bias).repeat_interleave(h * w)
    if identities:
        if rows != cols:
            raise ValueError("an identity branch needs as many FC outputs as inputs")
        out += identities * torch.eye(rows, dtype=out.dtype, device=out.device)
    return out, total

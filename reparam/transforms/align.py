r"""Kernel alignment: place the kernels of convs that read one input in one frame, and merge
convs whose outputs are summed into one conv.

Maths
-----
Convolution is linear in the kernel, so convs ``(W_t, b_t)`` over the same input with one
stride and one output grid sum to a single conv

.. math:: \sum_t (W_t * x + b_t) = \Big(\sum_t \operatorname{pad}(W_t)\Big) * x + \sum_t b_t

once every kernel sits in one frame, per spatial dim: a dilated kernel whose dilation is not
the frame's is expanded to dense (``d(k-1)+1`` taps, ``kernels.dilate_kernel``), and each kernel
is zero-padded (``kernels.pad_kernel``) at the offset ``(left - p_t) / d`` that lines its first
tap up with the frame's left padding ``left = max_t p_t``. The frame's right padding then
follows from the common output-size signature ``p_left + p_right - d(k-1)``. Exact only when
every conv has the same stride and signature, every offset falls on the frame's dilation grid,
and every conv that pads uses the frame's padding mode (zero and reflect borders differ).
Regrouping to the coarsest common ``groups`` is the caller's (``kernels.regroup_kernel``).

A conv on a crop of ``x`` (``crop_as_padding``) is the same conv on ``x`` with its padding
reduced by the crop (its taps start that much further in), so that it can take part: exact
where the conv does not pad a cropped side (it would read real pixels where the original
reads its zero padding). ACNet (arXiv:1908.03930) writes its 1×k / k×1 branches this way.

:func:`add_into_frame` is the case where one conv's frame already holds the other's kernel
(RepVGG's 3×3 absorbing a 1×1, RepNeXt's 7×7 absorbing its ``1×7 → 7×1`` pair): the sum
keeps the larger conv's geometry, and the smaller kernel (made dense if dilated, regrouped
to ``gcd`` of the groups) is added at the offset ``p_frame - p_small`` per dim.

Sources: RepVGG (arXiv:2101.03697, Sec. 3.3), ACNet (arXiv:1908.03930), DBB transforms II/IV/VI
(arXiv:2103.13425), RepLKNet (arXiv:2203.06717), UniRepLKNet (arXiv:2311.15599).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from reparam.convspec import ConvSpec
from reparam.errors import Refusal

from .concat import concat_kernels
from .kernels import dilate_kernel, pad_kernel, regroup_kernel

__all__ = ["add_into_frame", "align_specs", "concat_specs", "crop_as_padding", "merge_specs"]


def align_specs(specs: list[ConvSpec]) -> tuple[list[torch.Tensor], ConvSpec] | Refusal:
    """Place every kernel in one frame: the weights (float64) at their offsets and the merged
    geometry (weight/bias of the returned spec are those of ``specs[0]``; callers combine)."""
    dims = specs[0].dims
    if any(s.dims != dims for s in specs):
        return Refusal("branches have different spatial ranks")
    if len({s.stride for s in specs}) != 1:
        return Refusal(f"branches have different strides {sorted({s.stride for s in specs})}")
    dilation, padding, kernel, offsets = [], [], [], []
    for d in range(dims):
        wide = {s.dilation[d] for s in specs if s.kernel_size[d] > 1}
        dil = wide.pop() if len(wide) == 1 else 1
        sig = {s.size_signature()[d] for s in specs}
        if len(sig) != 1:
            return Refusal(
                f"branches produce different output sizes in spatial dim {d} "
                "(padding does not match kernel extent)"
            )
        left = max(s.padding[d][0] for s in specs)
        offs, ends = [], []
        for s in specs:
            if (left - s.padding[d][0]) % dil:
                return Refusal(f"branch taps do not fall on the dilation-{dil} grid in dim {d}")
            off = (left - s.padding[d][0]) // dil
            units = (
                s.kernel_size[d] if s.kernel_size[d] == 1 or s.dilation[d] == dil else s.extent[d]
            )
            offs.append(off)
            ends.append(off + units)
        size = max(ends)
        right = sig.pop() - left + dil * (size - 1)
        if left < 0:
            return Refusal(f"every branch crops spatial dim {d}: no conv padding starts there")
        if right < 0:
            return Refusal(f"no conv padding reproduces the branches' output grid in dim {d}")
        dilation.append(dil)
        padding.append((left, right))
        kernel.append(size)
        offsets.append(offs)
    modes = {s.padding_mode for s in specs if any(s.is_padded)}
    if len(modes) > 1:
        return Refusal(f"branches pad with different modes {sorted(modes)}: the border differs")
    mode = modes.pop() if modes else "zeros"
    for s in specs:
        for d in range(dims):
            if s.padding_mode != mode and s.is_padded[d]:
                return Refusal("a branch pads with a mode the merged conv cannot reproduce")
    weights = []
    for i, s in enumerate(specs):
        w = s.weight
        expand = tuple(
            s.dilation[d] if (s.dilation[d] != dilation[d] and s.kernel_size[d] > 1) else 1
            for d in range(dims)
        )
        if any(e > 1 for e in expand):
            w = dilate_kernel(w, expand)
        weights.append(pad_kernel(w, kernel, [offsets[d][i] for d in range(dims)]).double())
    frame = ConvSpec(
        specs[0].weight,
        specs[0].bias,
        specs[0].stride,
        tuple(padding),
        tuple(dilation),
        specs[0].groups,
        mode,
    )
    return weights, frame


def merge_specs(specs: list[ConvSpec]) -> ConvSpec | Refusal:
    """The one conv that computes the sum of ``specs`` (all reading one input)."""
    if len({s.out_channels for s in specs}) != 1 or len({s.in_channels for s in specs}) != 1:
        return Refusal("branches have different channel counts")
    aligned = align_specs(specs)
    if isinstance(aligned, Refusal):
        return aligned
    weights, frame = aligned
    like = specs[0].weight
    weight = torch.stack(weights).sum(0)
    bias = torch.zeros(like.shape[0], dtype=torch.float64, device=like.device)
    for s in specs:
        if s.bias is not None:
            bias = bias + s.bias.double()
    return frame.with_weights(weight.to(like.dtype), bias.to(like.dtype))


def concat_specs(specs: list[ConvSpec]) -> ConvSpec | Refusal:
    """The one conv whose output is the channel concatenation of ``specs`` (all reading one
    input, ``groups = 1``; DBB transform IV, ``concat.concat_kernels``)."""
    if any(s.groups != 1 for s in specs):
        return Refusal("grouped convs: stacking would interleave groups")
    if len({s.in_channels for s in specs}) != 1:
        return Refusal("the convs differ in input channels")
    aligned = align_specs(specs)
    if isinstance(aligned, Refusal):
        return aligned
    weights, frame = aligned
    weight, bias = concat_kernels(weights, [s.bias for s in specs])
    like = specs[0].weight
    return frame.with_weights(weight.to(like.dtype), bias.to(like.dtype))


def crop_as_padding(spec: ConvSpec, crop: tuple[tuple[int, int], ...]) -> ConvSpec | Refusal:
    """A conv on ``x`` cropped by ``crop`` (per spatial dim, removed at start and end) as the
    same conv on ``x`` with padding ``padding - crop``; refused where the conv pads a side
    that the crop removes pixels from (no padding of ``x`` reproduces that border)."""
    if len(crop) != spec.dims:
        return Refusal("the crop and the conv disagree on the spatial rank")
    padding = []
    for d, ((lo, hi), (left, right)) in enumerate(zip(crop, spec.padding, strict=True)):
        if (lo and left) or (hi and right):
            return Refusal(
                f"the crop removes real pixels in spatial dim {d} that the conv then pads with "
                "zeros: no padding of the uncropped input reproduces that border"
            )
        padding.append((left - lo, right - hi))
    return replace(spec, padding=tuple(padding))


def add_into_frame(frame: ConvSpec, spec: ConvSpec) -> ConvSpec | Refusal:
    """The one conv that computes ``frame + spec`` (both reading one input) in ``frame``'s
    geometry, when ``frame`` is undilated and ``spec``'s kernel fits in its frame at the
    offsets that line their borders up; a :class:`Refusal` saying why not otherwise."""
    if any(d != 1 for d in frame.dilation):
        return Refusal("the larger conv is dilated")
    if frame.stride != spec.stride or frame.size_signature() != spec.size_signature():
        return Refusal("other stride or output grid")
    if frame.out_channels != spec.out_channels or frame.in_channels != spec.in_channels:
        return Refusal("other channels")
    for (fl, _), (sl, _), k, e in zip(
        frame.padding, spec.padding, frame.kernel_size, spec.extent, strict=True
    ):
        if fl - sl < 0 or fl - sl + e > k:
            return Refusal("the kernel does not fit in the larger conv's frame")
    if any(spec.is_padded) and spec.padding_mode != frame.padding_mode:
        return Refusal("other padding mode")  # an unpadded kernel reads the same pixels
    groups = math.gcd(frame.groups, spec.groups)
    dense = dilate_kernel(spec.weight, spec.dilation)
    offset = [fl - sl for (fl, _), (sl, _) in zip(frame.padding, spec.padding, strict=True)]
    weight = (
        regroup_kernel(frame.weight, frame.groups, groups).double()
        + pad_kernel(regroup_kernel(dense, spec.groups, groups), frame.kernel_size, offset).double()
    )
    bias = None
    for b in (spec.bias, frame.bias):
        if b is not None:
            bias = b.double() if bias is None else bias + b.double()
    like = frame.weight
    return ConvSpec(
        weight.to(like.dtype),
        None if bias is None else bias.to(like.dtype),
        frame.stride,
        frame.padding,
        frame.dilation,
        groups,
        frame.padding_mode,
    )

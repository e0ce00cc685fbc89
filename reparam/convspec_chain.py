r"""Two linear layers in a row (conv or average pool, then conv or average pool) as one
:class:`~reparam.convspec.ConvSpec`, with the border argument that makes it exact.

An average pool with ``count_include_pad=True`` (or no padding) is a depthwise conv with the
kernel ``1/prod(k)`` (DBB transform VI, arXiv:2103.13425). Two convs compose into one
(DBB transform III; :func:`reparam.transforms.compose_sequential`):

.. math:: B(A(\operatorname{pad}_0^{p}(x))) = (B \star A)(\operatorname{pad}_0^{p}(x))

when ``A`` has stride 1 and dilation 1 and ``B`` has dilation 1. Borders, per spatial dim:

* ``A`` zero-pads (its own padding, or DBB / ECBSR's "pad ``A``'s output with ``A``'s bias",
  which is ``A`` on a zero-padded input when ``A`` is 1×1): the composite pads ``x`` alike,
  exact as long as ``B`` does not pad too;
* ``B`` zero-pads ``A``'s output: exact only when ``A`` is 1×1 and ``A(0) = 0`` (no bias),
  then the pads add; a bias would make the border read the bias where the original read 0.

Reflect / replicate / circular padding and pools with ``ceil_mode``, ``divisor_override`` or
``count_include_pad=False`` over a padded border are not convolutions of this kind: refused.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.convspec import ConvSpec
from reparam.transforms import avgpool_kernel, compose_sequential

_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _tuple(value: object, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims  # type: ignore[arg-type]


def pool_spec(pool: nn.Module, channels: int, like: torch.Tensor) -> ConvSpec | str:
    """An ``AvgPoolNd`` as a depthwise conv, or the reason it is not one."""
    dims = next(d for d, cls in enumerate(_POOLS, 1) if isinstance(pool, cls))
    k = _tuple(pool.kernel_size, dims)
    s = _tuple(pool.stride if pool.stride else pool.kernel_size, dims)
    p = _tuple(pool.padding, dims)
    if pool.ceil_mode:
        return "avg pool with ceil_mode=True has partial windows"
    if getattr(pool, "divisor_override", None):
        return "avg pool with divisor_override"
    if any(p) and not pool.count_include_pad:
        return (
            "avg pool with count_include_pad=False divides border windows by fewer taps: "
            "not a convolution"
        )
    weight = avgpool_kernel(channels, channels, k, like.dtype, like.device)
    return ConvSpec(weight, None, s, tuple((q, q) for q in p), (1,) * dims, channels)


def compose_specs(
    a: ConvSpec, b: ConvSpec, extra_pad: tuple[tuple[int, int], ...] | None = None
) -> ConvSpec | str:
    """The one conv computing ``b(a(pad_0(x, extra_pad)))``, or why there is none.

    ``extra_pad`` (per dim ``(left, right)``) is a zero pad of ``a``'s *input*, e.g. DBB's
    pad-with-bias after a 1×1 ``a`` moved in front of it (the caller checks the fill).
    """
    if a.dims != b.dims:
        return "layers of different spatial rank"
    if any(s != 1 for s in a.stride):
        return "the first layer strides"
    if any(d != 1 and k > 1 for d, k in zip(a.dilation, a.kernel_size, strict=True)) or any(
        d != 1 and k > 1 for d, k in zip(b.dilation, b.kernel_size, strict=True)
    ):
        return "a layer dilates"
    if a.out_channels != b.in_channels:
        return "channel counts do not chain"
    extra = extra_pad or tuple((0, 0) for _ in range(a.dims))
    pad_a = tuple((l1 + l2, r1 + r2) for (l1, r1), (l2, r2) in zip(a.padding, extra, strict=True))
    a_pads = any(lft or rgt for lft, rgt in pad_a)
    if a_pads and any(a.is_padded) and a.padding_mode != "zeros":
        return f"the first layer pads with mode '{a.padding_mode}'"
    if any(b.is_padded):
        if b.padding_mode != "zeros":
            return f"the second layer pads with mode '{b.padding_mode}'"
        if any(k != 1 for k in a.kernel_size):
            return "the second layer pads the output of a k×k layer: no single conv has that border"
        if a.bias is not None and bool((a.bias != 0).any()):
            return "the second layer zero-pads after a biased 1×1: the border would see the bias"
    padding = tuple((l1 + l2, r1 + r2) for (l1, r1), (l2, r2) in zip(pad_a, b.padding, strict=True))
    weight, bias, groups = compose_sequential(
        a.weight, a.bias, a.groups, b.weight, b.bias, b.groups
    )
    return ConvSpec(weight, bias, b.stride, padding, (1,) * a.dims, groups, "zeros")


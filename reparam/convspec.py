"""A convolution as plain data: weight, bias and geometry, to and from ``nn.ConvNd``.

Padding is kept per spatial dim as ``(left, right)`` so that ``padding='same'`` (which pads
one more on the right for even extents) is represented exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

CONV_TYPES: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@dataclass(frozen=True)
class ConvSpec:
    """Everything a ConvNd computes. ``weight``: (out, in/groups, *kernel)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"

    @property
    def dims(self) -> int:
        return self.weight.dim() - 2

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    @property
    def extent(self) -> tuple[int, ...]:
        """Receptive extent per dim: d*(k-1)+1."""
        return conv_extent(self.kernel_size, self.dilation)

    @property
    def is_padded(self) -> tuple[bool, ...]:
        return tuple(left > 0 or right > 0 for left, right in self.padding)

    def offsets(self) -> tuple[tuple[int, int], ...]:
        """Per dim, (first tap, last tap) relative to the output position times stride.

        Two convolutions of one input with the same stride produce the same output grid
        exactly when these are equal up to a widening that the larger kernel covers.
        """
        return tuple(
            (-left, -left + ext - 1)
            for (left, _), ext in zip(self.padding, self.extent, strict=True)
        )

    def size_signature(self) -> tuple[int, ...]:
        """``left + right - extent + 1`` per dim: equal signatures, equal output sizes."""
        return tuple(
            left + right - ext + 1
            for (left, right), ext in zip(self.padding, self.extent, strict=True)
        )

    def with_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> ConvSpec:
        return replace(self, weight=weight, bias=bias)


def conv_extent(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Receptive extent per dim of a kernel: ``d (k - 1) + 1``."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(left, right)`` per dim of ``padding='same'`` as torch applies it (the odd one right)."""
    pads = []
    for k, d in zip(kernel, dilation, strict=True):
        total = d * (k - 1)
        left = total // 2
        pads.append((left, total - left))
    return tuple(pads)


def conv_output_size(
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Spatial output size of a conv: ``(n + left + right - extent) // stride + 1`` per dim."""
    return tuple(
        (n + left + right - e) // s + 1
        for n, e, (left, right), s in zip(
            size, conv_extent(kernel, dilation), padding, stride, strict=True
        )
    )


def spec_from_conv(conv: nn.Module) -> ConvSpec:
    """Read a Conv1d/2d/3d (not transposed) into a ConvSpec."""
    kernel = tuple(conv.kernel_size)
    dilation = tuple(conv.dilation)
    if isinstance(conv.padding, str):
        padding = (
            same_padding(kernel, dilation)
            if conv.padding == "same"
            else tuple((0, 0) for _ in kernel)
        )
    else:
        padding = tuple((p, p) for p in conv.padding)
    return ConvSpec(
        weight=conv.weight.detach(),
        bias=None if conv.bias is None else conv.bias.detach(),
        stride=tuple(conv.stride),
        padding=padding,
        dilation=dilation,
        groups=conv.groups,
        padding_mode=conv.padding_mode,
    )


def conv_from_spec(spec: ConvSpec) -> nn.Module:
    """Build the ConvNd module that computes ``spec`` (raises ValueError if padding can't be
    expressed: asymmetric padding is only possible as ``'same'`` at stride 1)."""
    pads = spec.padding
    if all(left == right for left, right in pads):
        padding: tuple[int, ...] | str = tuple(left for left, _ in pads)
    elif all(s == 1 for s in spec.stride) and pads == same_padding(
        spec.kernel_size, spec.dilation
    ):
        padding = "same"
    else:
        raise ValueError(f"asymmetric padding {pads} cannot be expressed by a ConvNd")
    cls = CONV_TYPES[spec.dims]
    # skip_init: no random initialization of weights that are overwritten below
    conv = torch.nn.utils.skip_init(
        cls,
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        stride=spec.stride,
        padding=padding,
        dilation=spec.dilation,
        groups=spec.groups,
        bias=True,
        padding_mode=spec.padding_mode,
        device=spec.weight.device,
        dtype=spec.weight.dtype,
    )
    bias = (
        spec.bias
        if spec.bias is not None
        else torch.zeros(spec.out_channels, dtype=spec.weight.dtype, device=spec.weight.device)
    )
    with torch.no_grad():
        conv.weight.copy_(spec.weight)
        conv.bias.copy_(bias)
    return conv


def is_plain_conv(module: nn.Module) -> bool:
    """A forward (non-transposed) Conv1d/2d/3d, including subclasses traced as leaves."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))

"""A black-box oracle: is a module exactly one padded, stride-1 conv?

The engine under test merges multi-branch blocks into a single conv. This module answers the
same question without looking inside the block: an affine, translation-equivariant map is
determined by its response to a unit impulse (the kernel) and to a zero input (the bias);
the padding mode then fixes what happens at the border. :func:`impulse_conv` probes a module
that way and :func:`matches_single_conv` checks that the probed conv reproduces the module on
a given input, borders included. Use it to check that a block is exactly mergeable (the
strategies' "valid-by-construction" promise) or that a refusal case really is not, and to
compare the engine's merged kernel with an independently derived one.

Only stride 1 and size-preserving outputs are handled (output spatial size == input size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["impulse_conv", "matches_single_conv", "receptive_radius"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def receptive_radius(module: nn.Module) -> int:
    """An upper bound on the kernel radius of ``module`` seen as one conv.

    The sum over every conv / pooling leaf of its largest ``dilation * (k - 1)`` plus its
    padding: safe for any composition of those leaves (it over-estimates parallel branches).
    """
    total = 0
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            ks, dil = m.kernel_size, m.dilation
            total += max(d * (k - 1) for k, d in zip(ks, dil, strict=True))
        elif isinstance(
            m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
        ):
            k = m.kernel_size
            total += max(k) - 1 if isinstance(k, tuple) else k - 1
    return max(total, 1)


@torch.no_grad()
def impulse_conv(
    module: nn.Module,
    example_input: torch.Tensor,
    *,
    radius: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe ``module`` and return ``(weight, bias)`` of the conv it would be.

    ``weight`` has shape ``(C_out, C_in, 2R+1, ...)`` (dense, groups expanded; to be used with
    padding ``R``) and ``bias`` shape ``(C_out,)``, read from ``module(0)``. ``R`` is
    ``radius`` or :func:`receptive_radius`. The probes are unit impulses in the middle of a
    ``4R+1`` canvas, far enough from its border that no padding mode reaches them. The module
    must map ``(N, C_in, *S)`` to ``(N, C_out, *S)``. Nothing is asserted here;
    :func:`matches_single_conv` does the checking.
    """
    x = example_input
    c_in, dims = x.shape[1], x.dim() - 2
    r = receptive_radius(module) if radius is None else radius
    canvas = (4 * r + 1,) * dims
    centre = (2 * r,) * dims
    probes = torch.zeros((c_in, c_in, *canvas), dtype=x.dtype, device=x.device)
    for i in range(c_in):
        probes[(i, i, *centre)] = 1.0
    zero = torch.zeros((1, c_in, *canvas), dtype=x.dtype, device=x.device)
    base = module(zero)
    resp = module(probes) - base  # resp[i, o, c + R - u] = W[o, i, u]
    window = (slice(None), slice(None)) + (slice(r, 3 * r + 1),) * dims
    weight = resp[window].flip(dims=tuple(range(2, 2 + dims))).transpose(0, 1).contiguous()
    bias = base[(0, slice(None), *centre)].clone()
    return weight, bias


def _trim(weight: torch.Tensor, rel: float = 1e-12) -> tuple[torch.Tensor, int]:
    """Cut ``weight`` (odd, centred) down to the smallest centred support holding its taps."""
    dims = weight.dim() - 2
    r = (weight.shape[2] - 1) // 2
    tol = rel * float(weight.abs().max()) if weight.numel() else 0.0
    while r > 0:
        inner = (slice(None), slice(None)) + (slice(1, -1),) * dims
        outer = weight.abs().clone()
        outer[inner] = 0
        if float(outer.max()) > tol:
            break
        weight = weight[inner]
        r -= 1
    return weight, r


@torch.no_grad()
def matches_single_conv(
    module: nn.Module,
    example_input: torch.Tensor,
    *,
    radius: int | None = None,
    padding_mode: str = "zeros",
    rtol: float = 1e-7,
    atol: float = 1e-9,
) -> bool:
    """``True`` iff ``module(x)`` equals one stride-1, size-preserving conv of ``x`` whose
    input is padded with ``padding_mode`` (``'zeros'``, ``'reflect'``, ``'circular'``,
    ``'replicate'``), borders included.

    Checks that ``module(0)`` is spatially constant (such a conv maps 0 to its bias
    everywhere) and that the probed conv (:func:`impulse_conv`, trimmed to its support)
    reproduces ``module(example_input)``. The check runs on ``x``, ``-x``, ``1000 x`` and
    ``-1000 x`` (batched), so a non-linearity that happens to be inactive on ``x`` alone is
    still caught; it is a necessary condition on these inputs, not a proof. Tolerances suit
    float64.
    """
    x = example_input
    x = torch.cat([x, -x, 1e3 * x, -1e3 * x])
    dims = x.dim() - 2
    weight, bias = impulse_conv(module, x, radius=radius)
    y = module(x)
    if y.shape[2:] != x.shape[2:] or y.shape[1] != weight.shape[0]:
        return False
    zero_out = module(torch.zeros_like(x[:1]))
    bias_view = bias.view((1, -1) + (1,) * dims)
    if not torch.allclose(zero_out, bias_view.expand_as(zero_out), rtol=rtol, atol=atol):
        return False
    weight, r = _trim(weight)
    if padding_mode == "zeros":
        ref = _CONV_FN[dims](x, weight, bias, padding=r)
    else:
        try:
            padded = F.pad(x, [r] * (2 * dims), mode=padding_mode)
        except (RuntimeError, ValueError, NotImplementedError):
            return False  # the merged kernel is too large for this input under this mode
        ref = _CONV_FN[dims](padded, weight, bias)
    return torch.allclose(y, ref, rtol=rtol, atol=atol)

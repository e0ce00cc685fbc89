r"""Two convs whose kernels act on different axes as one conv (RepNeXt, arXiv:2406.16004:
a depthwise ``1×k`` followed by a ``k×1``; Inception-v3-style factorised ``k×1`` / ``1×k``).

Maths
-----
Along one spatial axis, call a conv *pointwise* there when its kernel is 1 and it does not
pad (it may stride). Suppose on every axis at least one of the two convs is pointwise. On
an axis where conv2 is pointwise, conv2 only subsamples conv1's output, so the pair reads
``x`` through conv1's taps:

.. math:: \text{kernel } k_1,\ \text{dilation } d_1,\ \text{padding } p_1,\ \text{stride } s_1 s_2.

On an axis where conv1 is pointwise it only subsamples ``x`` by ``s_1`` (every tap of conv2
lands on ``x[s_1 j]``), so

.. math:: \text{kernel } k_2,\ \text{dilation } s_1 d_2,\ \text{padding } s_1 p_2,\
          \text{stride } s_1 s_2,

and the output sizes agree (``floor((s_1 M + e) / (s_1 s_2)) = floor(M / s_2)`` for
``0 <= e < s_1``). Channels compose as in DBB transform III (:func:`compose_sequential`):
with the kernels on different axes their full correlation is the outer product, so the
merged kernel is ``K[o, i, u, v] = sum_m w2[o, m, 0, v] w1[m, i, u, 0]`` and the bias is
``b2 + sum w2 b1``, in ``gcd(g1, g2)`` groups.

Borders: conv2's zero padding pads conv1's *output*, whose in-range values carry ``b1``:
exact only when ``b1 = 0`` (or conv2 does not pad). A reflect / replicate / circular pad of
conv2 commutes with conv1 (pointwise there, stride 1), bias included; with ``s_1 > 1`` on
that axis it does not. Both convs padding with different modes: refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .compose import compose_sequential

__all__ = ["perpendicular_geometry", "compose_perpendicular"]


def _pointwise(k: int, pad: tuple[int, int]) -> bool:
    return k == 1 and pad == (0, 0)


def perpendicular_geometry(
    kernel1: Sequence[int],
    stride1: Sequence[int],
    padding1: Sequence[tuple[int, int]],
    dilation1: Sequence[int],
    mode1: str,
    kernel2: Sequence[int],
    stride2: Sequence[int],
    padding2: Sequence[tuple[int, int]],
    dilation2: Sequence[int],
    mode2: str,
    bias1_is_zero: bool,
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...], str]:
    """``(stride, padding, dilation, padding_mode)`` of the merged conv; ValueError saying
    why when the pair is not perpendicular or its border is not a single conv's."""
    stride, padding, dilation = [], [], []
    modes = set()
    for d, (k1, s1, p1, d1, k2, s2, p2, d2) in enumerate(
        zip(
            kernel1,
            stride1,
            padding1,
            dilation1,
            kernel2,
            stride2,
            padding2,
            dilation2,
            strict=True,
        )
    ):
        p1, p2 = tuple(p1), tuple(p2)
        if not _pointwise(k2, p2):
            if not _pointwise(k1, p1):
                raise ValueError(f"both convs act on spatial axis {d}: not perpendicular")
            if p2 != (0, 0):
                modes.add(mode2)
                if mode2 == "zeros" and not bias1_is_zero:
                    raise ValueError(
                        f"the second conv zero-pads axis {d} of the first conv's output, "
                        "which carries the first conv's bias: the border would differ"
                    )
                if mode2 != "zeros" and s1 != 1:
                    raise ValueError(
                        f"a {mode2} pad after the first conv's stride {s1} on axis {d} is not "
                        "a pad of the input"
                    )
            stride.append(s1 * s2)
            padding.append((s1 * p2[0], s1 * p2[1]))
            dilation.append(s1 * d2 if k2 > 1 else 1)
        else:
            if p1 != (0, 0):
                modes.add(mode1)
            stride.append(s1 * s2)
            padding.append(p1)
            dilation.append(d1 if k1 > 1 else 1)
    if len(modes) > 1:
        raise ValueError(f"the two convs pad with different modes {sorted(modes)}")
    return tuple(stride), tuple(padding), tuple(dilation), (modes.pop() if modes else "zeros")


def compose_perpendicular(
    w1: Tensor, b1: Tensor | None, groups1: int, w2: Tensor, b2: Tensor | None, groups2: int
) -> tuple[Tensor, Tensor, int]:
    """Weights of the merged conv: ``(weight, bias, groups)``, kernel ``max(k1, k2)`` per axis
    (the kernels must be 1 on different axes; the geometry comes from
    :func:`perpendicular_geometry`)."""
    for d, (k1, k2) in enumerate(zip(w1.shape[2:], w2.shape[2:], strict=True)):
        if k1 > 1 and k2 > 1:
            raise ValueError(f"both kernels extend along spatial axis {d}")
    return compose_sequential(w1, b1, groups1, w2, b2, groups2)

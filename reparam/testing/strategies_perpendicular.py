"""Hypothesis strategies: a conv followed by a conv whose kernel acts on the other axes
(``k×1`` then ``1×k``, RepNeXt's depthwise ``1×k → k×1``), alone or summed beside a conv on
the same input that can absorb it (RepNeXt's ``RepDWConvM``).

``Case.refuse`` marks pairs no single conv reproduces: the first conv has a bias and the
second zero-pads (the border would see the bias), or a copying pad follows a stride.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import Case, _make_case, _seeds

__all__ = ["perpendicular_cases"]


class _Pair(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module, partner: nn.Module | None) -> None:
        super().__init__()
        self.first, self.second, self.partner = first, second, partner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(self.first(x))
        return y if self.partner is None else self.partner(x) + y


@st.composite
def perpendicular_cases(draw, *, partner: bool | None = None, dtype=torch.float64,
                        device="cpu") -> Case:
    """Two 2-D convs, kernels on different axes (either order), with strides, dilations,
    padding on the acting axis, any groups (dense, grouped, depthwise) and padding modes.
    With ``partner`` a ``K×K`` conv on the same input (same stride, a frame holding the
    merged kernel) is added to the pair's output."""
    c = draw(st.sampled_from([1, 2, 4]))
    g1 = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0]))
    mid = g1 * draw(st.integers(1, 2)) if g1 > 1 else draw(st.integers(1, 4))
    g2 = draw(st.sampled_from([g for g in (1, g1) if mid % g == 0]))
    out = g2 * draw(st.integers(1, 2))
    if partner is None:
        partner = draw(st.booleans())
    if partner:  # the partner conv keeps stride 1 per axis for a simple common grid
        g1 = g2 = 1
        mid, out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    axis = draw(st.sampled_from([0, 1]))  # the axis the first conv acts on
    k1 = draw(st.sampled_from([2, 3, 5]))
    k2 = draw(st.sampled_from([2, 3, 5]))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "circular", "replicate"]))
    p1 = draw(st.integers(0, (k1 - 1) // 2 + (k1 % 2 == 0)))
    p2 = draw(st.integers(0, (k2 - 1) // 2 + (k2 % 2 == 0)))
    d1 = 1 if partner else draw(st.sampled_from([1, 1, 2]))
    d2 = 1 if partner else draw(st.sampled_from([1, 1, 2]))
    s_act1 = 1 if partner else draw(st.sampled_from([1, 2]))
    s_off1 = 1 if partner else draw(st.sampled_from([1, 2]))
    s_act2 = 1 if partner else draw(st.sampled_from([1, 2]))
    s_off2 = 1 if partner else draw(st.sampled_from([1, 2]))
    bias1 = draw(st.booleans())
    if partner:
        p1, p2 = (k1 - 1) // 2 if k1 % 2 else p1, (k2 - 1) // 2 if k2 % 2 else p2
    k1_t = (k1, 1) if axis == 0 else (1, k1)
    k2_t = (1, k2) if axis == 0 else (k2, 1)

    def per_axis(a: int, b: int) -> tuple[int, int]:
        return (a, b) if axis == 0 else (b, a)

    first = dict(kernel_size=k1_t, stride=per_axis(s_act1, s_off1), padding=per_axis(p1, 0),
                 dilation=per_axis(d1, 1), groups=g1, bias=bias1, padding_mode=mode)
    second = dict(kernel_size=k2_t, stride=per_axis(s_off2, s_act2), padding=per_axis(0, p2),
                  dilation=per_axis(1, d2), groups=g2, padding_mode=mode)
    # big enough for a dilated 5-tap kernel after a stride-2 subsample on the other axis
    size = (draw(st.integers(9, 12)), draw(st.integers(17, 20)))
    size = size if axis == 0 else size[::-1]
    seed = draw(_seeds())
    with seeded(seed):
        conv1, conv2 = nn.Conv2d(c, mid, **first), nn.Conv2d(mid, out, **second)
        extra = None
        if partner:
            big = max(k1, k2) + draw(st.sampled_from([0, 2]))
            big += (big % 2 == 0)
            extra = nn.Conv2d(c, out, big, padding=big // 2, padding_mode=mode)
    refuse = (p2 > 0 and mode == "zeros" and bias1) or (
        p2 > 0 and mode != "zeros" and s_off1 > 1)
    if partner:
        # the partner's frame must hold the merged kernel at the pair's offsets
        first_tap = per_axis(-p1, -p2)
        ext = per_axis(k1, k2)
        fits = all(-extra.padding[d] <= first_tap[d]
                   and first_tap[d] + ext[d] - 1 <= -extra.padding[d] + extra.kernel_size[d] - 1
                   and 2 * p - e + 1 == 2 * extra.padding[d] - extra.kernel_size[d] + 1
                   for d, (p, e) in enumerate(zip(per_axis(p1, p2), ext, strict=True)))
        if not fits:
            extra = None
    module = _Pair(conv1, conv2, extra)
    desc = (f"perpendicular[{'partner' if extra is not None else 'alone'}]: "
            f"conv1 {first}, conv2 {second}")
    return _make_case(module, (draw(st.integers(1, 2)), c, *size), seed, dtype=dtype,
                      device=device, description=desc, output_shape=None, refuse=refuse,
                      tags=("partner" if extra is not None else "alone",))

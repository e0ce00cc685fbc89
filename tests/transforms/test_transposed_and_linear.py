"""fold_affine_after_transposed and merge_linears against the layers they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reparam.transforms import fold_affine_after_transposed, merge_linears

_TCONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_transposed_fold_matches_conv_then_affine(dims, groups):
    g = torch.Generator().manual_seed(dims * 10 + groups)
    cin, per_group = 2 * groups, 3
    w = torch.randn(cin, per_group, *([3] * dims), generator=g, dtype=torch.float64)
    b = torch.randn(per_group * groups, generator=g, dtype=torch.float64)
    s = torch.randn(per_group * groups, generator=g, dtype=torch.float64)
    t = torch.randn(per_group * groups, generator=g, dtype=torch.float64)
    x = torch.randn(2, cin, *([4] * dims), generator=g, dtype=torch.float64)
    kw = dict(stride=2, padding=1, output_padding=1, groups=groups, dilation=1)
    shape = (1, -1) + (1,) * dims
    expected = _TCONV[dims](x, w, b, **kw) * s.view(shape) + t.view(shape)
    w2, b2 = fold_affine_after_transposed(w, b, s, t, groups)
    assert torch.allclose(_TCONV[dims](x, w2, b2, **kw), expected, rtol=1e-12, atol=1e-12)


def test_transposed_fold_rejects_wrong_channel_count():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        fold_affine_after_transposed(w, None, torch.ones(3), torch.zeros(3), groups=2)


def test_merge_linears_matches_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    bs = [
        torch.randn(5, generator=g, dtype=torch.float64),
        None,
        torch.randn(5, generator=g, dtype=torch.float64),
    ]
    cs = [0.5, -2.0, 0.25]
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    expected = sum(c * F.linear(x, w, b) for c, w, b in zip(cs, ws, bs, strict=True))
    w, b = merge_linears(ws, bs, cs)
    assert torch.allclose(F.linear(x, w, b), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        merge_linears(ws, bs[:2], cs)

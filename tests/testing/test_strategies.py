"""Every strategy draws modules that run, on their example input, with the promised shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.fx
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam.testing import strategies as S
from reparam.testing._common import seeded

# Reachability checks: stop at the first hit, no shrinking.
FIRST_HIT = settings(database=None, max_examples=300, phases=[Phase.generate])
FEW = settings(
    max_examples=max(5, settings.default.max_examples // 3),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
DIMS = [1, 2, 3]


def check(case: S.Case, device: torch.device, dtype: torch.dtype = torch.float64) -> None:
    """The invariants every drawn Case promises."""
    assert case.description.strip()
    assert repr(case)
    x = case.example_input
    assert x.device.type == device.type and x.dtype == dtype
    assert 1 <= x.shape[0] <= S.MAX_BATCH
    if x.dim() > 2:
        assert max(x.shape[2:]) <= S.MAX_SPATIAL[x.dim() - 2]
    assert all(not m.training for m in case.module.modules())
    for t in itertools.chain(case.module.parameters(), case.module.buffers()):
        if t.is_floating_point():
            assert t.dtype == dtype and t.device.type == device.type
    for m in case.module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            assert m.in_channels <= S.MAX_CHANNELS and m.out_channels <= S.MAX_CHANNELS
        if isinstance(m, _BatchNorm):
            if m.track_running_stats:
                assert float(m.running_var.min()) >= 0.5 - 1e-6  # positive, away from 0
                assert float(m.running_mean.abs().max()) > 0  # randomized
            if m.affine:
                assert float(m.weight.detach().abs().min()) >= 0.5 - 1e-6  # randomized
                assert not torch.all(m.bias.detach() == 0)
    out = S.check_case(case)
    outs = (out,) if isinstance(out, torch.Tensor) else out
    for o in outs:
        assert torch.isfinite(o).all()
    # The example input is not modified in place by the module.
    again = case.run()
    agains = (again,) if isinstance(again, torch.Tensor) else again
    for a, b in zip(outs, agains, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Everything the strategies build is torch.fx-traceable and traces to the same function.
    gm = torch.fx.symbolic_trace(case.module)
    with torch.no_grad():
        traced = gm(case.example_input)
    traced = (traced,) if isinstance(traced, torch.Tensor) else traced
    for a, b in zip(outs, traced, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dims", DIMS)
@FEW
@given(data=st.data())
def test_conv_specs_build_and_predict_output_size(dims: int, data: st.DataObject) -> None:
    spec = data.draw(S.conv_specs(dims))
    assert spec.in_channels % spec.groups == 0 and spec.out_channels % spec.groups == 0
    assert 1 <= spec.in_channels <= S.MAX_CHANNELS and 1 <= spec.out_channels <= S.MAX_CHANNELS
    assert spec.padding != "same" or all(s == 1 for s in spec.stride)
    assert spec.describe()
    conv = spec.build()
    lo = spec.min_input_size()
    hi = (S.MAX_SPATIAL[dims],) * dims
    assert all(a <= b for a, b in zip(lo, hi, strict=True))
    for size in {lo, hi}:
        with torch.no_grad():
            y = conv(torch.zeros((1, spec.in_channels, *size)))
        assert tuple(y.shape) == (1, spec.out_channels, *spec.output_size(size))


@pytest.mark.parametrize("dims", DIMS)
@FEW
@given(data=st.data())
def test_conv_bn(device: torch.device, dims: int, data: st.DataObject) -> None:
    case = data.draw(S.conv_bn(dims, device=device))
    check(case, device)
    assert not case.refuse


@FEW
@given(data=st.data())
def test_linear_bn_and_bn_linear(device: torch.device, data: st.DataObject) -> None:
    for strat in (S.linear_bn(device=device), S.bn_linear(device=device)):
        case = data.draw(strat)
        check(case, device)
        assert not case.refuse


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("padded", [False, True])
@FEW
@given(data=st.data())
def test_bn_conv(device: torch.device, dims: int, padded: bool, data: st.DataObject) -> None:
    case = data.draw(S.bn_conv(dims, padded=padded, device=device))
    check(case, device)
    bn = next(m for m in case.module.modules() if isinstance(m, _BatchNorm))
    conv = next(m for m in case.module.modules() if isinstance(m, nn.modules.conv._ConvNd))
    assert case.refuse == (padded and conv.padding_mode == "zeros")
    if case.refuse:
        assert "REFUSE" in case.description
        shift = bn(torch.zeros((1, bn.num_features) + (1,) * dims, dtype=torch.float64,
                               device=device))
        assert float(shift.abs().min()) >= 0.2 - 1e-9


@FEW
@given(data=st.data())
def test_float32(device: torch.device, data: st.DataObject) -> None:
    case = data.draw(st.one_of(
        S.conv_bn(2, dtype=torch.float32, device=device),
        S.bn_conv(2, dtype=torch.float32, device=device),
        S.branch_blocks(2, dtype=torch.float32, device=device),
    ))
    check(case, device, torch.float32)


@pytest.mark.parametrize("dims", DIMS)
@FEW
@given(data=st.data())
def test_branch_blocks(device: torch.device, dims: int, data: st.DataObject) -> None:
    case = data.draw(S.branch_blocks(dims, device=device,
                                     padding_modes=("zeros", "reflect", "circular")))
    check(case, device)
    assert not case.refuse
    assert "branch_block" in case.tags


@pytest.mark.parametrize("kind", S.BRANCH_KINDS)
def test_every_branch_kind_is_reachable(kind: str) -> None:
    case = find(S.branch_blocks(2, kinds=("kxk", kind)), lambda c: kind in c.tags,
                settings=FIRST_HIT)
    assert kind in case.tags


@pytest.mark.parametrize("style", S.SUM_STYLES)
def test_every_sum_style_is_reachable(style: str) -> None:
    find(S.branch_blocks(2, max_branches=3), lambda c: f"style:{style}" in c.tags,
         settings=FIRST_HIT)


@pytest.mark.parametrize("dims", DIMS)
@FEW
@given(data=st.data())
def test_block_stacks(device: torch.device, dims: int, data: st.DataObject) -> None:
    case = data.draw(S.block_stacks(dims, device=device))
    check(case, device)


@pytest.mark.parametrize("kind", S.REFUSAL_KINDS)
@FEW
@given(data=st.data())
def test_refusal_cases(device: torch.device, kind: str, data: st.DataObject) -> None:
    case = data.draw(S.refusal_cases(kinds=[kind], device=device))
    check(case, device)
    assert case.refuse
    assert case.description.startswith(f"REFUSE {kind}: ")
    assert kind in case.tags


def test_refusal_cases_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown refusal kind"):
        find(S.refusal_cases(kinds=["nope"]), lambda c: True, settings=FIRST_HIT)


def test_randomize_norms_and_seeded() -> None:
    with seeded(3):
        a = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4),
                          nn.BatchNorm1d(4, affine=False), nn.LayerNorm(4))
    with seeded(3):
        b = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4),
                          nn.BatchNorm1d(4, affine=False), nn.LayerNorm(4))
    S.randomize_norms(a, torch.Generator().manual_seed(1))
    S.randomize_norms(b, torch.Generator().manual_seed(1))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    bn = a[1]
    assert bn.running_var.min() >= 0.5 and bn.running_var.max() <= 2.0
    assert bn.weight.abs().min() >= 0.5 and bn.bias.abs().min() >= 0.1
    assert not torch.equal(a[2].weight, torch.ones(4))
    assert a[3].running_mean.abs().max() > 0
    assert not torch.equal(a[4].bias, torch.zeros(4))

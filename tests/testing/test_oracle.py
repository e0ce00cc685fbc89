"""The strategies' exactness promises, checked with the black-box impulse-response oracle.

Branch blocks (zero padding, stride 1, no activation) must equal ONE zero-padded conv,
borders included; the linear refusal cases must not.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from reparam.testing import strategies as S
from reparam.testing.oracle import impulse_conv, matches_single_conv, receptive_radius

FEW = settings(
    max_examples=max(5, settings.default.max_examples // 3),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
# Largest kernel radius a single branch of a drawn block can have.
RADIUS = {1: 6, 2: 6, 3: 2}


def test_oracle_recovers_a_plain_conv(device: torch.device) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 5, padding=2).double().to(device)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, device=device)
    w, b = impulse_conv(conv, x, radius=2)
    torch.testing.assert_close(w, conv.weight.detach())
    torch.testing.assert_close(b, conv.bias.detach())
    assert matches_single_conv(conv, x)
    assert receptive_radius(conv) == 4  # safe upper bound


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_oracle_tells_padding_modes_apart(device: torch.device, mode: str) -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode=mode).double().to(device)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, device=device)
    assert not matches_single_conv(conv, x)
    assert matches_single_conv(conv, x, padding_mode=mode)


@pytest.mark.parametrize("dims", [1, 2, 3])
@FEW
@given(data=st.data())
def test_branch_blocks_are_exactly_one_conv(
    device: torch.device, dims: int, data: st.DataObject
) -> None:
    case = data.draw(S.branch_blocks(dims, device=device, strides=(1,), allow_activation=False))
    assert matches_single_conv(case.module, case.example_input, radius=RADIUS[dims]), case


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("mode", ["reflect", "circular"])
@FEW
@given(data=st.data())
def test_reflect_and_circular_branch_blocks_are_exactly_one_conv(
    device: torch.device, dims: int, mode: str, data: st.DataObject
) -> None:
    case = data.draw(S.branch_blocks(dims, device=device, strides=(1,), allow_activation=False,
                                     padding_modes=(mode,)))
    assert matches_single_conv(case.module, case.example_input, radius=RADIUS[dims],
                               padding_mode=mode), case


@pytest.mark.parametrize("kind", ["seq_dbb_pad", "seq_1x1_avg", "concat", "avgpool", "scale"])
@FEW
@given(data=st.data())
def test_tricky_branch_kinds_are_exactly_one_conv(
    device: torch.device, kind: str, data: st.DataObject
) -> None:
    case = data.draw(S.branch_blocks(2, device=device, strides=(1,), allow_activation=False,
                                     kinds=("kxk", kind), max_branches=3))
    assert matches_single_conv(case.module, case.example_input, radius=RADIUS[2]), case


LINEAR_REFUSALS = [
    "bn_before_padded_conv",
    "mixed_padding_modes",
    "output_padded_branch",
    "bn_between_1x1_and_padded_kxk",
    "avgpool_exclude_pad",
    "nonlinear_branch",
]


@pytest.mark.parametrize("kind", LINEAR_REFUSALS)
@FEW
@given(data=st.data())
def test_refusals_are_not_one_conv(device: torch.device, kind: str, data: st.DataObject) -> None:
    case = data.draw(S.refusal_cases(kinds=[kind], device=device))
    assume("stride:1" in case.tags)
    assert not matches_single_conv(case.module, case.example_input, radius=6), case

"""Never silently wrong: random block stacks with hooks, parent references, optional
arguments, side effects, in-place writes and reused modules either deploy exactly (on the
example input and on another batch size, hooks still firing) or fail with a ReparamError."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reparam
from reparam.testing.hazards import HazardCase, hazardous_stacks

from ._harness import DEVICES, SLOW_EXAMPLES, count_example


def _never_silently_wrong(case: HazardCase) -> None:
    try:
        deployed = reparam.deploy(case.module, case.example_input)
    except reparam.ReparamError:
        return
    for x in (case.example_input, case.other_input):
        case.calls.clear()
        with torch.no_grad():
            expected = case.module(copy.deepcopy(x))
            calls_expected = list(case.calls)
            case.calls.clear()
            got = deployed(copy.deepcopy(x))
        err = reparam.relative_error(expected, got)
        assert err <= 1e-9, f"relative error {err:.3e} on {case.description}"
        assert case.calls == calls_expected, f"hooks fired differently: {case.description}"


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25)  # each example deploys a whole stack twice over: keep CI short
@given(data=st.data())
def test_hazards(device: str, data: st.DataObject) -> None:
    _never_silently_wrong(data.draw(hazardous_stacks(device=device)))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=SLOW_EXAMPLES)
@given(data=st.data())
def test_hazards_slow(device: str, data: st.DataObject) -> None:
    _never_silently_wrong(data.draw(hazardous_stacks(device=device)))
    count_example()

"""Issue 8 (part A) properties: each linear structure merges exactly (float64, relative error
<= 1e-9, input model untouched, FLOPs never up) where it may, and is left alone where not."""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing import strategies_linear as L

from ._harness import deploy_exactly, make_property

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm,)


def executed(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...]) -> int:
    """How many calls of ``kinds`` one forward makes."""
    calls = []
    handles = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return len(calls)


def _computed(case):
    result = deploy_exactly(case)
    fired = result.report.fired().get("computed_weights", 0)
    assert fired == (0 if case.refuse else 1), (case.description, result.report.refusals)
    if not case.refuse and "computed_conv" in case.tags:
        assert executed(result.model, case.example_input, NORMS) == 0, case.description


def _transposed(case):
    result = deploy_exactly(case)
    fired = result.report.fired().get("transposed_conv_norm", 0)
    assert fired == (0 if case.refuse else 1), (case.description, result.report.refusals)


def _cropped(case):
    result = deploy_exactly(case)
    convs = executed(result.model, case.example_input, CONVS)
    if case.refuse:
        assert convs > 1 and any("crop removes real pixels" in o.reason
                                 for o in result.report.refusals), case.description
    else:
        assert convs == 1, (case.description, result.report.refusals)
        assert executed(result.model, case.example_input, NORMS) == 0


def _identity_act(case):
    result = deploy_exactly(case)
    convs = executed(result.model, case.example_input, CONVS)
    assert convs == (2 if case.refuse else 1), (case.description, result.report.refusals)


def _heads(case):
    result = deploy_exactly(case)
    linears = executed(result.model, case.example_input, (nn.Linear,))
    n = len(case.module.heads)
    if case.refuse:  # one head reads another input: parallel_linears leaves it alone
        # (affine_branch_fc may still fold it exactly when it is affine in the FC's input)
        assert linears >= 2 or "affine_branch_fc" in result.report.fired(), case.description
    else:
        assert linears == 1 and n >= 2, (case.description, result.report.refusals)
        assert executed(result.model, case.example_input, NORMS) == 0


def _dbb_avg(case):
    result = deploy_exactly(case)
    norms = executed(result.model, case.example_input, NORMS)
    if case.refuse:
        assert norms >= 1 and any("count_include_pad" in o.reason
                                  for o in result.report.refusals), case.description
    else:
        assert executed(result.model, case.example_input, CONVS) == 1, (
            case.description, result.report.refusals)
        assert norms == 0, case.description


test_computed_weights, test_computed_weights_slow = make_property(
    _computed, lambda d: L.computed_weight_convs(device=d), fast_examples=25)
test_transposed_conv_norm, test_transposed_conv_norm_slow = make_property(
    _transposed, lambda d: L.transposed_conv_norms(device=d), fast_examples=25)
test_cropped_branches, test_cropped_branches_slow = make_property(
    _cropped, lambda d: L.cropped_branches(device=d), fast_examples=25)
test_identity_activations, test_identity_activations_slow = make_property(
    _identity_act, lambda d: L.identity_activation_stacks(device=d), fast_examples=25)
test_linear_heads, test_linear_heads_slow = make_property(
    _heads, lambda d: L.linear_heads(device=d), fast_examples=25)
test_dbb_avg_branch, test_dbb_avg_branch_slow = make_property(
    _dbb_avg, lambda d: L.dbb_avg_blocks(device=d), fast_examples=25)

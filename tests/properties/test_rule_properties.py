"""Hypothesis properties: every rewrite is exact (float64, relative error <= 1e-9), the input
model is never mutated, FLOPs never grow, and structures merge where the rule says they can."""

from __future__ import annotations

from torch import nn

from reparam.testing import strategies as S

from ._harness import count_modules, deploy_exactly, make_property

NORMS = (nn.modules.batchnorm._BatchNorm,)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _all_norms_folded(case: S.Case) -> None:
    result = deploy_exactly(case)
    assert count_modules(result.model, NORMS) == 0, (case.description, result.report.refusals)


def _norm_before_conv(case: S.Case) -> None:
    result = deploy_exactly(case)
    left = count_modules(result.model, NORMS)
    assert left == (1 if case.refuse else 0), (case.description, result.report.refusals)


def _branches_merge(case: S.Case) -> None:
    result = deploy_exactly(case)
    convs = count_modules(result.model, CONVS)
    declined = [o.reason for o in result.report.refusals if "slower" in o.reason]
    assert convs <= 1 or declined, (case.description, result.report.refusals)
    assert count_modules(result.model, NORMS) == 0 or declined, case.description


# DBB's "pad with BN(0)" branches (seq_dbb_pad, seq_1x1_avg) merge only when a kxk branch
# beside them makes the composed kernel no more expensive (a lone 1x1 -> avg pool stays, by
# the cost model), which these random blocks do not guarantee: they are checked for exactness
# here (test_branch_blocks_1d_3d and test_dbb_pad_branch) and for merging in
# test_linear_structure_properties.py::test_dbb_avg_branch.
DBB_PAD_KINDS = ("seq_dbb_pad", "seq_1x1_avg")
MERGEABLE_KINDS = tuple(k for k in S.BRANCH_KINDS if k not in DBB_PAD_KINDS)


def _exact(case: S.Case) -> None:
    deploy_exactly(case)


test_conv_bn_1d, test_conv_bn_1d_slow = make_property(
    _all_norms_folded, lambda d: S.conv_bn(dims=1, device=d))
test_conv_bn_2d, test_conv_bn_2d_slow = make_property(
    _all_norms_folded, lambda d: S.conv_bn(dims=2, device=d))
test_conv_bn_3d, test_conv_bn_3d_slow = make_property(
    _all_norms_folded, lambda d: S.conv_bn(dims=3, device=d))
test_linear_bn, test_linear_bn_slow = make_property(
    _all_norms_folded, lambda d: S.linear_bn(device=d))
test_bn_linear, test_bn_linear_slow = make_property(
    _all_norms_folded, lambda d: S.bn_linear(device=d))
test_bn_conv, test_bn_conv_slow = make_property(
    _norm_before_conv, lambda d: S.bn_conv(dims=2, device=d))
test_branch_blocks, test_branch_blocks_slow = make_property(
    _branches_merge,
    lambda d: S.branch_blocks(dims=2, device=d, allow_activation=False, kinds=MERGEABLE_KINDS))
test_dbb_pad_branch, test_dbb_pad_branch_slow = make_property(
    _exact, lambda d: S.branch_blocks(dims=2, device=d, kinds=(*DBB_PAD_KINDS, "kxk")))
test_branch_blocks_padding_modes, test_branch_blocks_padding_modes_slow = make_property(
    _branches_merge, lambda d: S.branch_blocks(
        dims=2, device=d, padding_modes=("reflect", "circular", "replicate"),
        allow_activation=False, kinds=MERGEABLE_KINDS))
test_branch_blocks_1d_3d, test_branch_blocks_1d_3d_slow = make_property(
    _exact, lambda d: S.branch_blocks(dims=1, device=d) | S.branch_blocks(dims=3, device=d))
test_block_stacks, test_block_stacks_slow = make_property(
    _exact, lambda d: S.block_stacks(dims=2, device=d))
test_refusal_cases, test_refusal_cases_slow = make_property(
    _exact, lambda d: S.refusal_cases(device=d))

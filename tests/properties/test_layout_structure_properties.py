"""Properties of the rules for linear structures across layouts (issue 8): norms after a
permute / flatten, norms shared by several readers, perpendicular kernels, and branches
affine in an FC's input. Each is exact in float64 on drawn cases, merges where the case says
it can and leaves the structure where it must not (``Case.refuse``)."""

from __future__ import annotations

import torch
from torch import nn

import reparam
from reparam.testing import strategies_affine_branch as AB
from reparam.testing import strategies_layout as L
from reparam.testing import strategies_perpendicular as P
from reparam.testing.strategies import Case

from ._harness import count_modules, deploy_exactly, make_property

NORMS = (nn.modules.batchnorm._BatchNorm,)


def _norm_folded_unless_refused(case: Case) -> None:
    result = deploy_exactly(case)
    left = count_modules(result.model, NORMS)
    assert left == (1 if case.refuse else 0), (case.description, result.report.refusals)


def _perpendicular_forced(case: Case) -> None:
    """allow_slower: every exact pair becomes one conv."""
    result = reparam.deploy_with_report(case.module, case.example_input, check=False,
                                        allow_slower=True)
    with torch.no_grad():
        err = reparam.relative_error(case.module(case.example_input),
                                     result.model(case.example_input))
    assert err <= 1e-9, (err, case.description)
    convs = count_modules(result.model, (nn.Conv2d,))
    assert convs == (2 if case.refuse else 1), (case.description, result.report.refusals)


def _perpendicular_partner(case: Case) -> None:
    """Default cost model: a pair beside a conv that holds its kernel goes into it; alone,
    the pair stays (one k×k conv is more MACs)."""
    result = deploy_exactly(case)
    convs = count_modules(result.model, (nn.Conv2d,))
    if "partner" in case.tags:
        assert convs == (3 if case.refuse else 1), (case.description, result.report.refusals)
    else:
        assert convs >= 1


def _branches_into_fc(case: Case) -> None:
    result = deploy_exactly(case)
    left = [n for n, m in result.model.named_modules()
            if isinstance(m, (nn.Conv2d, *NORMS)) and n != "fc"]
    bad = "bad:relu" in case.tags or (case.refuse and "bad:whole_map" in case.tags)
    assert len(left) == (1 if bad else 0), (case.description, left, result.report.refusals)


test_norm_after_layout, test_norm_after_layout_slow = make_property(
    _norm_folded_unless_refused, lambda d: L.norm_after_layout_cases(device=d), fast_examples=25)
test_shared_norm, test_shared_norm_slow = make_property(
    _norm_folded_unless_refused, lambda d: L.shared_norm_cases(device=d), fast_examples=25)
test_perpendicular_forced, test_perpendicular_forced_slow = make_property(
    _perpendicular_forced, lambda d: P.perpendicular_cases(partner=False, device=d),
    fast_examples=25)
test_perpendicular_partner, test_perpendicular_partner_slow = make_property(
    _perpendicular_partner, lambda d: P.perpendicular_cases(partner=True, device=d),
    fast_examples=25)
test_affine_branch_fc, test_affine_branch_fc_slow = make_property(
    _branches_into_fc, lambda d: AB.affine_branch_cases(device=d), fast_examples=25)

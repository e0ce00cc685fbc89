"""Issue 8 (part A): models written in their papers' idioms deploy exactly and leave no more
convs / norms / linears than the paper's own conversion (the plain twin), counted as the
aten ops one forward runs (functional ``F.conv2d`` calls count as convs too)."""

from __future__ import annotations

import pytest

import reparam
from reparam.testing.opcount import OP_KINDS, op_counts
from reparam.testing.zoo_linear import LINEAR_ZOO, LINEAR_ZOO_PLAIN, linear_zoo_input

# a model the engine does not deploy to its paper form yet goes here, with the reason
_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=False, reason=_XFAIL[n]))
        if n in _XFAIL
        else n
        for n in sorted(LINEAR_ZOO)
    ],
)
def test_paper_style_model_deploys_to_its_plain_form(name):
    model = LINEAR_ZOO[name]()
    x = linear_zoo_input(name)
    result = reparam.deploy_with_report(model, x)
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-9
    other = list(x.shape)
    other[0] += 1
    if len(other) == 4:
        other[2] += 3
        other[3] += 2
    x2 = linear_zoo_input(name, seed=1, shape=tuple(other))
    assert reparam.relative_error(model(x2), result.model(x2)) <= 1e-9
    ours, plain = op_counts(result.model, x), op_counts(LINEAR_ZOO_PLAIN[name](), x)
    for kind in OP_KINDS:
        assert ours[kind] <= plain[kind], (kind, ours, plain, result.report.refusals)

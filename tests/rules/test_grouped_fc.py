"""grouped_fc_as_bmm: a (grouped) 1×1 conv on 1×1 maps computed by a batched matmul.

Exactness is a property over random shapes and groups (float64, <= 1e-9 relative); whether the
rule fires is a timing decision, so the engine tests inject the timer (``GroupedFcAsBmm(timer=)``)
and one test runs the real one, accepting either outcome as long as the report is consistent.
"""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import reparam
from reparam.rules import default_registry
from reparam.rules.grouped_fc import (
    GroupedFcAsBmm,
    GroupedPointwiseConv,
    grouped_pointwise_conv2d,
    measure,
)

f64 = torch.float64
# the device fixture is the same for every example of a property: nothing to reset
with_device = settings(suppress_health_check=[*settings.default.suppress_health_check,
                                              HealthCheck.function_scoped_fixture])


def _faster(conv, shape):
    return 2e-3, 1e-3


def _slower(conv, shape):
    return 1.2e-3, 1.5e-3


def _marginal(conv, shape):
    return 1.0e-3, 0.95e-3  # within timing noise: not worth a different kernel


class GroupedFC(nn.Module):
    """RepMLP's shape: rows of a (N, C) matrix through a grouped FC written as a 1×1 conv."""

    def __init__(self, cin: int, cout: int, groups: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Conv2d(cin, cout, 1, groups=groups, bias=bias)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1, 1, 1)).flatten(1).relu()


def _deploy(model: nn.Module, x: torch.Tensor | None, timer=_faster, **kw):
    model = (model if x is None else model.to(x)).eval()
    rule = GroupedFcAsBmm(timer=timer, min_macs=0)  # tiny test FCs count as sites
    return reparam.deploy_with_report(model, x, rules=[rule], **kw)


@given(
    n=st.integers(1, 5),
    groups=st.integers(1, 6),
    in_per=st.integers(1, 6),
    out_per=st.integers(1, 6),
    size=st.sampled_from([(1, 1), (1, 1), (2, 3), (1, 2)]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@with_device
def test_same_function_as_the_conv(device, n, groups, in_per, out_per, size, bias, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_per * groups, out_per * groups, 1, groups=groups, bias=bias)
    conv = conv.to(device, f64)
    fast = GroupedPointwiseConv.from_conv(conv)
    x = torch.randn(n, in_per * groups, *size, dtype=f64, device=device)
    with torch.no_grad():
        expected = conv(x)
        out = fast(x)
    assert out.shape == expected.shape
    assert reparam.relative_error(expected, out) <= 1e-9
    # same parameters (shared tensors), same state_dict keys and shapes
    assert fast.weight is conv.weight and fast.bias is conv.bias
    assert {k: v.shape for k, v in fast.state_dict().items()} == {
        k: v.shape for k, v in conv.state_dict().items()
    }


@given(
    n=st.integers(1, 4),
    groups=st.integers(1, 5),
    in_per=st.integers(1, 5),
    out_per=st.integers(1, 5),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rule_is_exact_and_keeps_the_layout(n, groups, in_per, out_per, bias, seed):
    torch.manual_seed(seed)
    model = GroupedFC(in_per * groups, out_per * groups, groups, bias).double().eval()
    x = torch.randn(n, in_per * groups, dtype=f64)
    result = _deploy(model, x)
    assert result.report.fired() == {"grouped_fc_as_bmm": 1}
    deployed = result.model
    assert type(deployed.fc) is GroupedPointwiseConv and isinstance(deployed.fc, nn.Conv2d)
    assert reparam.relative_error(model(x), deployed(x)) <= 1e-9
    assert {k: v.shape for k, v in deployed.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert "bmm" in result.report.rewrites[0].detail


def test_deployed_model_pickles_traces_and_redeploys():
    torch.manual_seed(0)
    model = GroupedFC(12, 8, 4).double().eval()
    x = torch.randn(3, 12, dtype=f64)
    deployed = _deploy(model, x).model
    for other in (pickle.loads(pickle.dumps(deployed)), copy.deepcopy(deployed)):
        assert type(other.fc) is GroupedPointwiseConv
        assert torch.equal(other(x), deployed(x))
    # plain torch.fx traces through it to one call of the batched-matmul function
    gm = torch.fx.symbolic_trace(deployed)
    assert any(n.target is grouped_pointwise_conv2d for n in gm.graph.nodes)
    assert torch.equal(gm(x), deployed(x))
    # the engine sees an ordinary conv leaf: deploying again changes nothing, skips nothing
    again = reparam.deploy_with_report(deployed, x)
    assert again.report.fired() == {} and again.report.skipped_scopes == []
    # a deployed checkpoint loads into the plain model (and back)
    plain = GroupedFC(12, 8, 4).double().eval()
    plain.load_state_dict(deployed.state_dict(), strict=True)
    assert reparam.relative_error(plain(x), deployed(x)) <= 1e-12


class _NormThenBlock(nn.Module):
    """A parent whose own rewrite (its BN folded into the conv of a child block) re-traces the
    child holding the bmm conv: RepMLPNet's unit (prebn, then the RepMLP block's fc3)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.pre = nn.Conv2d(4, 12, 1)
        self.block = GroupedFC(12, 8, 4)

    def forward(self, x):
        return self.block(self.pre(self.bn(x)))


def test_a_parent_rewrite_still_calls_the_bmm_conv_as_a_module():
    """Found on RepMLPNet at full size: a parent rewritten after grouped_fc_as_bmm fired below
    it traced into ``GroupedPointwiseConv`` (its class overrides ``_conv_forward``) and inlined
    the batched matmul, so ``fc`` stayed in the model but no longer ran as a module (its hooks
    never fired). Deployed forms are leaves of every trace."""
    torch.manual_seed(0)
    model = _NormThenBlock().double().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 4, 1, 1, dtype=f64)
    rules = [r for r in default_registry() if r.name != "grouped_fc_as_bmm"]
    rules.append(GroupedFcAsBmm(timer=_faster, min_macs=0))
    result = reparam.deploy_with_report(model, x, rules=rules)
    fired = result.report.fired()
    assert fired.get("grouped_fc_as_bmm") == 2 and fired.get("norm_conv") == 1, fired  # pre, fc
    deployed = result.model
    assert type(deployed.block.fc) is GroupedPointwiseConv
    ran: list[str] = []
    deployed.block.fc.register_forward_hook(lambda *_: ran.append("fc"))
    for batch in (x, torch.randn(5, 4, 1, 1, dtype=f64)):
        with torch.no_grad():
            assert reparam.relative_error(model(batch), deployed(batch)) <= 1e-9
    assert ran == ["fc", "fc"]


def test_refuses_when_the_bmm_is_not_faster():
    model = GroupedFC(12, 8, 4).double()
    result = _deploy(model, torch.randn(3, 12, dtype=f64), timer=_slower)
    assert result.report.fired() == {}
    assert type(result.model.fc) is nn.Conv2d
    (refusal,) = result.report.refusals
    assert refusal.rule == "grouped_fc_as_bmm" and refusal.site == "fc"
    assert refusal.reason.startswith("grouped conv 1.2 ms vs bmm 1.5 ms")


def test_refuses_a_marginal_gain():
    result = _deploy(GroupedFC(12, 8, 4).double(), torch.randn(3, 12, dtype=f64),
                     timer=_marginal)
    assert result.report.fired() == {}
    assert "not clearly faster" in result.report.refusals[0].reason


def test_dense_fc_is_a_site_too():
    """groups=1 (RepMLPNet's first-stage FC): the conv kernel is ~3x slower than one GEMM."""
    result = _deploy(GroupedFC(12, 8, 1).double(), torch.randn(3, 12, dtype=f64))
    assert result.report.fired() == {"grouped_fc_as_bmm": 1}
    assert type(result.model.fc) is GroupedPointwiseConv


def test_refuses_without_shapes_and_when_shared():
    result = _deploy(GroupedFC(12, 8, 4), None)
    assert [o.reason for o in result.report.refusals] == [
        "the input shape is unknown; pass example_inputs"
    ]

    class TwoCalls(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Conv2d(8, 8, 1, groups=2)

        def forward(self, x):
            return self.fc(self.fc(x))

    dense = _deploy(GroupedFC(12, 8, 1), None)  # no shapes, dense: no site, no refusal
    assert dense.report.refusals == []

    result = _deploy(TwoCalls(), torch.randn(2, 8, 1, 1))
    assert result.report.fired() == {}
    assert "called more than once" in result.report.refusals[0].reason


class Iterated(nn.Module):
    """Calls the items of an nn.Sequential one by one: the Sequential itself is never called, so
    the engine deploys it as a scope without inputs (no shapes)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(GroupedFC(12, 12, 4), GroupedFC(12, 12, 4))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize(("timer", "min_macs"), [(_slower, 0), (_faster, 10**9)])
def test_a_never_called_scope_does_not_refuse_for_want_of_shapes(timer, min_macs):
    model = Iterated().double().eval()
    x = torch.randn(2, 12, dtype=f64)
    rule = GroupedFcAsBmm(timer=timer, min_macs=min_macs)
    result = reparam.deploy_with_report(model, x, rules=[rule])
    reasons = [o.reason for o in result.report.refusals]
    assert not any("unknown" in r for r in reasons), reasons
    if min_macs:  # too small to be a site: nothing to say anywhere
        assert reasons == []
    else:
        assert len(reasons) == 2 and all(" vs bmm " in r for r in reasons)


@pytest.mark.parametrize(
    ("conv", "size"),
    [
        (nn.Conv2d(8, 8, 1, groups=2), 3),  # real maps, not an FC
        (nn.Conv2d(8, 8, 1, groups=2, stride=2), 1),
        (nn.Conv2d(8, 8, 3, groups=2, padding=1), 1),
    ],
)
def test_other_convs_are_not_sites(conv, size):
    model = nn.Sequential(conv)
    result = _deploy(model, torch.randn(2, 8, size, size))
    assert result.report.fired() == {} and result.report.refusals == []
    assert reparam.explain(model, torch.randn(2, 8, size, size)).fired() == []


def test_tiny_fcs_are_no_sites():
    """An SE-style gate (a few thousand multiply-adds) is not worth timing or reporting."""
    model = GroupedFC(96, 24, 1).eval()
    result = reparam.deploy_with_report(model, torch.randn(1, 96), rules=["grouped_fc_as_bmm"])
    assert result.report.fired() == {} and result.report.refusals == []


def test_real_timer_decides_and_reports_consistently():
    GroupedFcAsBmm.clear_timings()
    torch.manual_seed(0)
    model = GroupedFC(6272, 6272, 128).eval()  # RepMLPNet-B224's last-stage FC
    x = torch.randn(6, 6272)
    result = reparam.deploy_with_report(model, x, rules=["grouped_fc_as_bmm"])
    if result.report.fired():
        assert type(result.model.fc) is GroupedPointwiseConv
        detail = result.report.rewrites[0].detail
        assert re.match(r"grouped conv \S+ \S+ → bmm \S+ \S+ \(\d+\.\d× faster\)", detail)
    else:
        assert type(result.model.fc) is nn.Conv2d
        assert re.match(r"grouped conv \S+ \S+ vs bmm ", result.report.refusals[0].reason)
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-5


def test_measure_is_bounded_and_cached():
    GroupedFcAsBmm.clear_timings()
    conv = nn.Conv2d(256, 256, 1, groups=8)
    import time

    start = time.perf_counter()
    first = measure(conv, (4, 256, 1, 1))
    elapsed = time.perf_counter() - start
    assert all(t > 0 for t in first)
    assert elapsed < 0.5  # budget ~50 ms (plus one warm-up pair)
    assert measure(nn.Conv2d(256, 256, 1, groups=8), (4, 256, 1, 1)) == first  # same geometry


def test_is_a_builtin_rule_and_validates_its_geometry():
    assert "grouped_fc_as_bmm" in default_registry()
    rule = default_registry().get("grouped_fc_as_bmm")
    assert rule.refuses_when and "2105.01883" in rule.maths
    with pytest.raises(ValueError, match="1×1 conv with stride 1"):
        GroupedPointwiseConv(4, 4, 3, groups=2)


def test_the_rule_itself_pickles_and_still_fires() -> None:
    """A registry holding the rule can be sent to another process (a data loader's worker, a
    multiprocessing pool); the shapes one deploy saw are not part of it."""
    rule = GroupedFcAsBmm(timer=_faster, min_macs=0)
    x = torch.randn(2, 12)
    reparam.deploy(GroupedFC(12, 12, 3).eval(), x, rules=[rule])  # the rule has seen shapes
    again = pickle.loads(pickle.dumps(rule))
    assert len(again._seen) == 0 and again.min_macs == 0
    result = reparam.deploy_with_report(GroupedFC(12, 12, 3).eval(), x, rules=[again])
    assert result.report.fired() == {"grouped_fc_as_bmm": 1}

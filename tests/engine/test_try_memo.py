"""The driver remembers tries that did not fire: a scope with many rewrites is not quadratic,
the result is the one trying everything again gives, and a memo that missed a dependency is
caught in checking mode (which the whole suite runs in, see conftest.py)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import reparam
from reparam import Refusal, Rewrite, RuleContext
from reparam.demo import randomize_batch_norms
from reparam.matcher import recording_visits
from reparam.patterns import Any_, Bindings, Call, Module
from reparam.rules.base import PatternRule
from reparam.rules.conv_norm import FoldNormAfterConv
from reparam.try_memo import StaleMemoError


def _flat(pairs: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(pairs):
        layers += [nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()]
    return randomize_batch_norms(nn.Sequential(*layers).double(), 0).eval()


def _count_matches(monkeypatch, model: nn.Module, x: torch.Tensor) -> tuple[int, dict]:
    """How many pattern matches one deploy runs (every PatternRule try is one)."""
    from reparam import matcher

    calls = [0]

    def counting_match(pattern, node, view):
        calls[0] += 1
        return matcher.match(pattern, node, view)

    monkeypatch.setattr("reparam.rules.base.match", counting_match)
    result = reparam.deploy_with_report(model, x)
    return calls[0], result.report.fired()


def test_tries_grow_linearly_with_rewrites_in_one_scope(monkeypatch):
    monkeypatch.setenv("REPARAM_CHECK_MEMO", "0")
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    small, fired_small = _count_matches(monkeypatch, _flat(8), x)
    large, fired_large = _count_matches(monkeypatch, _flat(32), x)
    assert fired_small == {"conv_norm": 8} and fired_large == {"conv_norm": 32}
    # trying every (rule, node) again after each of the n rewrites would make this ~4x
    assert large / 32 <= 1.5 * small / 8, (small, large)


@pytest.mark.parametrize("pairs", [3, 12])
def test_same_model_with_and_without_the_memo(monkeypatch, pairs):
    model = _flat(pairs)
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    results = []
    for check in ("1", "0"):
        monkeypatch.setenv("REPARAM_CHECK_MEMO", check)
        results.append(reparam.deploy_with_report(model, x))
    a, b = results
    assert a.report.fired() == b.report.fired() == {"conv_norm": pairs}
    assert a.model.state_dict().keys() == b.model.state_dict().keys()
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    other = torch.randn(1, 4, 9, 3, dtype=torch.float64)
    assert reparam.relative_error(model(other), b.model(other)) <= 1e-9


class _FarSighted(PatternRule):
    """A (deliberately badly written) rule whose check reads the whole graph, beyond what its
    pattern looked at: it swaps a ReLU for a fresh one once no batch norm is left anywhere."""

    name = "far_sighted"
    summary = "test rule"
    pattern = "relu(x)"
    graph_pattern = Module(nn.ReLU).bind("relu")

    def check(self, m: Bindings, ctx: RuleContext):
        if any(
            n.op == "call_module" and isinstance(ctx.module(n.target), nn.BatchNorm2d)
            for n in ctx.graph.nodes
        ):
            return Refusal("a batch norm is left somewhere")
        if getattr(m.module("relu"), "_fresh", False):
            return Refusal("already fresh")
        return m["relu"]

    def rewrite(self, node, ctx: RuleContext) -> Rewrite:
        fresh = nn.ReLU()
        fresh._fresh = True
        ctx.tx.place(str(node.target), fresh)
        return Rewrite(self.name, ctx.site_name(node), "fresh ReLU")


class _FarModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.conv, self.bn = nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.act(x) * 2.0 - 1.0
        return self.bn(self.conv(y + 0.5))


def test_checking_mode_catches_a_memo_that_missed_a_dependency(monkeypatch):
    model = randomize_batch_norms(_FarModel().double(), 1).eval()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rules = [_FarSighted(), FoldNormAfterConv()]
    monkeypatch.setenv("REPARAM_CHECK_MEMO", "1")
    with pytest.raises(StaleMemoError, match="far_sighted"):
        reparam.deploy_with_report(model, x, rules=rules)
    # without checking, the badly written rule's second chance is skipped, nothing is wrong
    monkeypatch.setenv("REPARAM_CHECK_MEMO", "0")
    result = reparam.deploy_with_report(model, x, rules=rules)
    assert result.report.fired() == {"conv_norm": 1}
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-9


class _BiasPadBranches(nn.Module):
    """DBB's 1×1 → pad with its bias → k×k beside a k×k, the fill computed from the bias."""

    def __init__(self):
        super().__init__()
        self.one, self.k = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3)
        self.other = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        c = self.one.bias.view(1, -1, 1, 1) * 1.0
        return self.k(F.pad(self.one(x) - c, [1, 1, 1, 1]) + c) + self.other(x)


def test_a_try_depends_on_the_terms_insides_and_on_what_a_fill_is_computed_from():
    """parallel_branches matches each term of the sum deep (a conv after DBB's pad with the
    1×1's bias), and evaluates the fill value (is it the 1×1's bias?) from the nodes it is
    computed from, further than the pattern's own: the try depends on all of them."""
    from reparam.rules.parallel_branches import MergeParallelBranches

    model = _BiasPadBranches().double().eval()
    ctx = RuleContext(model, fx.symbolic_trace(model).graph)
    root = next(n for n in ctx.graph.nodes if n.op == "output").args[0]
    with recording_visits() as seen:
        assert MergeParallelBranches().match(root, ctx)
    bias = next(n for n in ctx.graph.nodes if n.op == "get_attr")
    one = next(n for n in ctx.graph.nodes if n.target == "one")
    # the fill's own inputs, and the first conv of a term (matched inside the sum's term)
    assert bias in seen and one in seen
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x, rules=["parallel_branches"])
    assert result.report.fired() == {"parallel_branches": 1}
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-9


class _DropTimesOne(PatternRule):
    """``x * 1`` → ``x`` (a rewrite far from the perpendicular pair, in the same sum)."""

    name = "drop_times_one"
    summary = "test rule"
    pattern = "x * 1"
    graph_pattern = Call(operator.mul, Any_(), Any_()).bind("mul")

    def check(self, m: Bindings, ctx: RuleContext):
        return m["mul"] if m["mul"].args[1] == 1 else Refusal("not * 1")

    def rewrite(self, node, ctx: RuleContext) -> Rewrite:
        ctx.tx.redirect(node, node.args[0])
        ctx.tx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "dropped * 1")


class _PairBesideConv(nn.Module):
    """RepNeXt-like: a depthwise 3×1 → 1×3 pair (slower merged alone) summed beside a
    depthwise 3×3 of the same input, two adds away and behind a ``* 1`` at first."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.a = nn.Conv2d(c, c, (3, 1), padding=(1, 0), groups=c, bias=False)
        self.b = nn.Conv2d(c, c, (1, 3), padding=(0, 1), groups=c)
        self.k = nn.Conv2d(c, c, 3, padding=1, groups=c)

    def forward(self, x):
        return (self.b(self.a(x)) + torch.relu(x)) + self.k(x) * 1


@pytest.mark.parametrize("check", ["1", "0"])
def test_a_check_that_walks_the_sum_depends_on_it(monkeypatch, check):
    """perpendicular_convs looks for a partner conv among the sum's other terms, beyond its
    pattern's nodes: those count for the memo, so the pair is tried again once the ``* 1``
    in front of the partner is gone (and absorbed into it)."""
    from reparam.rules.perpendicular_convs import MergePerpendicularConvs

    model = _PairBesideConv().double().eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    monkeypatch.setenv("REPARAM_CHECK_MEMO", check)
    rules = [MergePerpendicularConvs(), _DropTimesOne()]
    result = reparam.deploy_with_report(model, x, rules=rules)
    assert result.report.fired() == {"drop_times_one": 1, "perpendicular_convs": 1}
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-9


class _DropTimesZero(PatternRule):
    """``a + b * 0`` → ``a`` (erasing what only fed ``b``)."""

    name = "drop_times_zero"
    summary = "test rule"
    pattern = "a + b * 0"
    graph_pattern = Call(
        operator.add, Any_().bind("a"), Call(operator.mul, Any_(), Any_()).bind("mul")
    ).bind("add")

    def check(self, m: Bindings, ctx: RuleContext):
        return m if m["mul"].args[1] == 0 else Refusal("not * 0")

    def rewrite(self, m: Bindings, ctx: RuleContext) -> Rewrite:
        ctx.tx.redirect(m["add"], m["a"])
        ctx.tx.erase_unused([m["add"]])
        return Rewrite(self.name, ctx.site_name(m["add"]), "dropped + b * 0")


class _FcCalledTwice(nn.Module):
    """A grouped FC called twice, once in a term that another rule drops."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2d(8, 8, 1, groups=2)

    def forward(self, x, other):
        return torch.sigmoid(torch.relu(self.fc(x))) + self.fc(other) * 0


@pytest.mark.parametrize("check", ["1", "0"])
def test_a_refusal_for_a_module_called_twice_depends_on_the_other_call(monkeypatch, check):
    """grouped_fc_as_bmm refuses a module called more than once: when the other call goes
    (far from this one), the remembered refusal is forgotten and the FC is a site again."""
    from reparam.rules.grouped_fc import GroupedFcAsBmm

    model = _FcCalledTwice().double().eval()
    x = torch.randn(2, 8, 1, 1, dtype=torch.float64)
    monkeypatch.setenv("REPARAM_CHECK_MEMO", check)
    fast = GroupedFcAsBmm(timer=lambda conv, shape: (1.0, 0.1), min_macs=0)
    result = reparam.deploy_with_report(model, (x, 2 * x), rules=[fast, _DropTimesZero()])
    assert result.report.fired() == {"drop_times_zero": 1, "grouped_fc_as_bmm": 1}
    assert not result.report.refusals
    assert reparam.relative_error(model(x, 2 * x), result.model(x, 2 * x)) <= 1e-9

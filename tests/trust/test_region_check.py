"""A scope's check of only what its own rewrites changed (``reparam.graph.region``) catches a
wrong rewrite as the whole-scope check does, and steps aside for what it cannot show."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

import reparam
from reparam import Rewrite, Rule, RuleContext, RuleRegistry

from ._common import double_negation

DEPLOY = sys.modules["reparam.deploy"]


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Negated(nn.Module):
    """A body whose conv + norm merge in its own scope, then -(-y) and a conv at the top."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negated = -self.body(x)
        return self.head(-negated)


class NegatedFunctional(nn.Module):
    """The same with the head written functionally: its weight is read by ``get_attr``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Body()
        self.head_weight = nn.Parameter(torch.randn(2, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negated = -self.body(x)
        return F.conv2d(-negated, self.head_weight)


class DropOneNegation(Rule):
    """Wrong: -(-x) becomes -x."""

    name = "drop_one_negation"
    summary = "wrong on purpose"
    pattern = "neg(neg(x))"

    def match(self, node: Node, ctx: RuleContext):
        return double_negation(node)

    def check(self, node: Node, ctx: RuleContext):
        return node

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        ctx.tx.redirect(node, node.args[0])
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "-(-x) -> -x")


class NegationsIntoHead(Rule):
    """Right graph, wrong module: -(-x) goes, and a head that forgot its bias is placed."""

    name = "negations_into_head"
    summary = "wrong on purpose"
    pattern = "head(neg(neg(x)))"

    def match(self, node: Node, ctx: RuleContext):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], Node):
            return None
        return node if double_negation(node.args[0]) is not None else None

    def check(self, node: Node, ctx: RuleContext):
        return node

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        negations = node.args[0]
        old = ctx.module(str(node.target))
        new = copy.deepcopy(old)
        new.bias = None
        ctx.tx.substitute(node, new, stem="head", exclusive=True)
        ctx.tx.set_input(node, 0, negations.args[0].args[0])
        ctx.erase_unused([negations])
        return Rewrite(self.name, ctx.site_name(node), "negations dropped, bias forgotten")


class NegationsAndAWrite(Rule):
    """Right graph, and a write into the head's weights in place that the graph does not show."""

    name = "negations_and_a_write"
    summary = "wrong on purpose"
    pattern = "neg(neg(x))"
    how = "data"

    def match(self, node: Node, ctx: RuleContext):
        return double_negation(node)

    def check(self, node: Node, ctx: RuleContext):
        return node

    def victim(self, node: Node, ctx: RuleContext) -> torch.Tensor:
        head = next(iter(node.users))  # the conv the negations feed: write its weight
        if head.op == "call_module":
            return ctx.root.get_submodule(str(head.target)).weight
        return ctx.root.get_parameter(str(head.args[1].target))

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        weight = self.victim(node, ctx)
        if self.how == "data":
            weight.data.mul_(2)  # no version bump
        else:
            with torch.no_grad():
                weight.mul_(2)
        ctx.tx.redirect(node, node.args[0].args[0])
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "-(-x) -> x, and a silent write")


class NegatedFloored(Negated):
    """The same with a learnt floor after the head (nothing folds it), read by ``get_attr``."""

    def __init__(self) -> None:
        super().__init__()
        self.floor = nn.Parameter(torch.full((2, 1, 1), -0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(super().forward(x), self.floor)


class NegationsAndAFloorWrite(NegationsAndAWrite):
    """Right graph, and a write into a tensor an unchanged node reads by ``get_attr``."""

    def victim(self, node: Node, ctx: RuleContext) -> torch.Tensor:
        return ctx.root.get_parameter("floor")


def _model(kind: type[nn.Module] = Negated) -> nn.Module:
    torch.manual_seed(0)
    model = kind().eval()
    with torch.no_grad():
        model.body.bn.running_mean.uniform_(-1, 1)
        model.body.bn.running_var.uniform_(0.5, 2)
    return model


def _registry(rule: Rule) -> RuleRegistry:
    return RuleRegistry([*reparam.default_registry(), rule])


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Which check each scope got: the region's error, or the whole scope's."""
    seen: dict[str, list] = {"region": [], "whole": []}
    region_error, whole_error = DEPLOY.region_error, DEPLOY._Scope._whole_error

    def spy_region(*args, **kwargs):
        err = region_error(*args, **kwargs)
        seen["region"].append(err)
        return err

    def spy_whole(self, *args, **kwargs):
        seen["whole"].append(self.path)
        return whole_error(self, *args, **kwargs)

    monkeypatch.setattr(DEPLOY, "region_error", spy_region)
    monkeypatch.setattr(DEPLOY._Scope, "_whole_error", spy_whole)
    return seen


def test_an_exact_deploy_checks_its_parents_by_region(paths) -> None:
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired()["conv_norm"] == 1
    assert result.report.region_checks == result.report.checked_scopes >= 1
    assert paths["whole"] == [] and all(e is not None and e < 1e-6 for e in paths["region"])
    assert any("the part their own rewrites changed" in n for n in result.report.notes)
    with torch.no_grad():
        for batch in (x, torch.randn(1, 3, 5, 7)):
            torch.testing.assert_close(result.model(batch), model(batch))


def test_a_wrong_graph_rewrite_at_the_top_is_caught_by_its_region(paths) -> None:
    with pytest.raises(reparam.ReparamError, match="differs from the original after drop_one"):
        reparam.deploy(_model(), torch.randn(2, 3, 8, 8), rules=_registry(DropOneNegation()))
    assert paths["whole"] == []  # the region alone found it
    assert paths["region"][-1] is not None and paths["region"][-1] > 1e-3


def test_a_wrong_module_placed_at_the_top_is_caught_by_its_region(paths) -> None:
    with pytest.raises(reparam.ReparamError, match="differs from the original after negations"):
        reparam.deploy(_model(), torch.randn(2, 3, 8, 8), rules=_registry(NegationsIntoHead()))
    assert paths["whole"] == []
    assert paths["region"][-1] is not None and paths["region"][-1] > 1e-3


@pytest.mark.parametrize("how", ["data", "no_grad"])
@pytest.mark.parametrize("kind", [Negated, NegatedFunctional])
def test_a_write_in_place_sends_the_scope_to_the_whole_check(paths, how: str, kind) -> None:
    rule = NegationsAndAWrite()
    rule.how = how
    with pytest.raises(reparam.ReparamError, match="differs from the original after .*negations"):
        reparam.deploy(_model(kind), torch.randn(2, 3, 8, 8), rules=_registry(rule))
    if kind is Negated:  # the head, unchanged in the graph, was written: the whole check ran
        assert paths["whole"] == [""]
    else:  # computed_weights moved the weight into a new conv first: the region saw the write
        assert paths["whole"] == [] and paths["region"][-1] > 1e-3


def test_a_scope_called_at_two_shapes_is_checked_whole(paths) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Negated()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            small = self.inner(x[:, :, :4, :4]).mean()
            return self.inner(x) + small

    model = Twice().eval()
    model.inner = _model()
    with pytest.raises(reparam.ReparamError, match="differs from the original after negations"):
        reparam.deploy(model, torch.randn(2, 3, 8, 8), rules=_registry(NegationsIntoHead()))
    assert "inner" in paths["whole"]


@pytest.mark.parametrize("how", ["data", "no_grad"])
def test_a_write_into_a_tensor_read_by_get_attr_is_seen(paths, how: str) -> None:
    rule = NegationsAndAFloorWrite()
    rule.how = how
    with pytest.raises(reparam.ReparamError, match="differs from the original after .*negations"):
        reparam.deploy(_model(NegatedFloored), torch.randn(2, 3, 8, 8), rules=_registry(rule))
    assert paths["whole"] == [""]  # the floor, read by an unchanged node, was written

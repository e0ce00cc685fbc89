"""Users add rules with exactly the machinery the built-ins use."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn
from torch.fx import Node

import reparam
from reparam import Refusal, Rewrite, Rule, RuleContext, RuleRegistry


class FoldDoubleNegation(Rule):
    """Replaces neg(neg(x)) with x."""

    name = "double_negation"
    summary = "-(-x) is x"
    pattern = "neg(neg(x))"
    refuses_when = ("the inner negation is used elsewhere",)

    def match(self, node: Node, ctx: RuleContext):
        inner = node.args[0] if node.args else None
        if node.target is operator.neg and isinstance(inner, Node) and inner.target is operator.neg:
            return node
        return None

    def check(self, node: Node, ctx: RuleContext):
        if len(node.args[0].users) != 1:
            return Refusal("inner negation has another user")
        return node

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        node.replace_all_uses_with(node.args[0].args[0])
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "removed -(-x)")


class Negate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        negated = -self.conv(x)
        return -negated


def test_custom_rule_fires_through_deploy():
    registry = RuleRegistry(list(reparam.default_registry()) + [FoldDoubleNegation()])
    model = Negate().double().eval()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x, rules=registry)
    assert result.report.fired() == {"double_negation": 1}
    assert "neg" not in str(reparam.graph.realize.graph_of(result.model))
    torch.testing.assert_close(result.model(x), model(x), rtol=0, atol=0)


def test_register_rule_in_default_registry_and_duplicates():
    rule = reparam.register_rule(FoldDoubleNegation)
    try:
        assert "double_negation" in [r.name for r in reparam.list_rules()]
        with pytest.raises(reparam.ReparamError, match="already registered"):
            reparam.register_rule(FoldDoubleNegation)
        model = Negate().double().eval()
        assert reparam.deploy_with_report(model).report.fired()["double_negation"] == 1
    finally:
        reparam.unregister_rule(rule.name)


def test_custom_rule_refusal_is_explained():
    class Shared(nn.Module):
        def forward(self, x):
            y = -x
            return -y + y

    registry = RuleRegistry([FoldDoubleNegation()])
    explanation = reparam.explain(Shared(), torch.randn(2), rules=registry)
    assert [s.reason for s in explanation.refused()] == ["inner negation has another user"]


def test_rule_without_name_is_rejected():
    class Nameless(Rule):
        def match(self, node, ctx):
            return None

        def check(self, m, ctx):
            return None

        def rewrite(self, p, ctx):
            raise AssertionError

    with pytest.raises(reparam.ReparamError, match="name"):
        RuleRegistry([Nameless()])

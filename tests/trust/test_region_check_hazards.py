"""What a region check could be fooled by (found by a review of it), each written the way a
user's model or a buggy rule would: every one must end in the check's error, or, for an exact
deploy, in no false alarm."""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.fx import Node

import reparam
from reparam import Rewrite, Rule, RuleContext, RuleRegistry


def _negations(node: Node) -> Node | None:
    inner = node.args[0] if node.args else None
    if node.target is operator.neg and isinstance(inner, Node) and inner.target is operator.neg:
        return node
    return None


class DropNegations(Rule):
    """-(-x) -> x (right), with a side effect of a buggy rule (``side(ctx)``)."""

    name = "drop_negations"
    summary = "right, plus a side effect"
    pattern = "neg(neg(x))"

    def __init__(self, side: Callable[[RuleContext], None] = lambda ctx: None) -> None:
        self.side = side

    def match(self, node: Node, ctx: RuleContext):
        return _negations(node)

    def check(self, node: Node, ctx: RuleContext):
        return node

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        self.side(ctx)
        ctx.tx.redirect(node, node.args[0].args[0])
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "-(-x) -> x")


class AbsToRelu(Rule):
    """Wrong on purpose: abs(x) -> relu(x), right only where x >= 0."""

    name = "abs_to_relu"
    summary = "wrong on purpose"
    pattern = "abs(x)"

    def match(self, node: Node, ctx: RuleContext):
        return node if node.op == "call_function" and node.target is torch.abs else None

    def check(self, node: Node, ctx: RuleContext):
        return node

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        relu = ctx.tx.insert_function(torch.relu, (node.args[0],), before=node)
        ctx.tx.redirect(node, relu)
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "abs -> relu")


def _registry(*rules: Rule) -> RuleRegistry:
    return RuleRegistry([*reparam.default_registry(), *rules])


class PreThenHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negated = -self.pre(x)
        return self.head(-negated)


class _UsesSibling(nn.Module):
    """Calls a conv it holds in a plain list; data-dependent, so it stays an opaque call."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self._conv = [conv]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv[0](x)
        return y if float(y.abs().sum()) >= 0 else -y


class SiblingInAList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)  # registered here, called only by `user`
        self.user = _UsesSibling(self.pre)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negated = -self.user(x)
        return self.head(-negated)


def _flip_through_data(ctx: RuleContext) -> None:
    weight = ctx.root.get_submodule("pre").weight
    weight.data.copy_(weight.data.flip(-1))  # same values, other places: no version bump


def _leave_a_hook(ctx: RuleContext) -> None:
    ctx.root.get_submodule("pre").register_forward_hook(lambda m, i, out: out * 2)


def _scale_in_place(ctx: RuleContext) -> None:
    with torch.no_grad():
        ctx.root.get_submodule("pre").weight.mul_(2)


@pytest.mark.parametrize(
    ("model", "side"),
    [
        (PreThenHead, _flip_through_data),
        (PreThenHead, _leave_a_hook),
        (SiblingInAList, _scale_in_place),
    ],
    ids=["permuted-through-data", "hook-left-behind", "sibling-in-a-list"],
)
def test_a_rule_changing_what_an_unchanged_node_reads_is_caught(model, side) -> None:
    torch.manual_seed(0)
    with pytest.raises(reparam.ReparamError, match="differs from the original"):
        rules = _registry(DropNegations(side))
        reparam.deploy(model().eval(), torch.randn(2, 3, 8, 8), rules=rules)


class AbsThenInPlaceRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        b = self.head(torch.abs(a))  # reads a before the in-place relu below
        return b + self.act(a)


class AbsThenClamp(AbsThenInPlaceRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        b = self.head(torch.abs(a))
        a.clamp_(min=0)  # read again below: functionalized
        return b + a * 2


@pytest.mark.parametrize("model", [AbsThenInPlaceRelu, AbsThenClamp])
def test_a_value_written_in_place_later_is_not_used_as_the_region_input(model) -> None:
    torch.manual_seed(0)
    with pytest.raises(reparam.ReparamError, match="differs from the original after abs_to_relu"):
        reparam.deploy(model().eval(), torch.randn(2, 3, 8, 8), rules=_registry(AbsToRelu()))


class AbsBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.abs(x))


class CallsTheBlockTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = AbsBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        negated = -(self.block(h) + self.block(-h))  # first call h >= 0, second -h <= 0
        return -negated


def test_a_child_checked_on_its_first_call_only_is_checked_whole_by_its_parent() -> None:
    torch.manual_seed(0)
    rules = _registry(AbsToRelu(), DropNegations())
    with pytest.raises(reparam.ReparamError, match="differs from the original"):
        reparam.deploy(CallsTheBlockTwice().eval(), torch.randn(2, 3, 8, 8), rules=rules)


class DropoutThenAddInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.drop(self.pre(x)).add_(1)
        return self.bn(self.conv(c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_in_place_write_in_the_region_raises_no_false_alarm(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = DropoutThenAddInPlace().eval().to(dtype)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired()["conv_norm"] == 1
    with torch.no_grad():
        torch.testing.assert_close(result.model(x.clone()), model(x.clone()))


class GraphConv(nn.Module):
    """A sparse adjacency buffer next to a Linear + BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
        self.register_buffer("adj", torch.sparse_coo_tensor(index, torch.ones(4), (4, 4)))
        self.lin = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.adj, self.bn(self.lin(x)))


def test_a_sparse_buffer_is_checked_whole_not_a_crash() -> None:
    torch.manual_seed(0)
    model = GraphConv().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 8)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired()["linear_norm"] == 1
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x))

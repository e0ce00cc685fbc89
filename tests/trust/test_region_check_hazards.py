"""What a region check could be fooled by (found by a review of it), each written the way a
user's model or a buggy rule would: every one must end in the check's error, or, for an exact
deploy, in no false alarm."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.fx import Node

import reparam
from reparam import Rewrite, Rule, RuleContext, RuleRegistry

from ._common import double_negation


class DropNegations(Rule):
    """-(-x) -> x (right), with a side effect of a buggy rule (``side(ctx)``)."""

    name = "drop_negations"
    summary = "right, plus a side effect"
    pattern = "neg(neg(x))"

    def __init__(self, side: Callable[[RuleContext], None] = lambda ctx: None) -> None:
        self.side = side

    def match(self, node: Node, ctx: RuleContext):
        return double_negation(node)

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


# -- found by a second review ---------------------------------------------------------------


class AbsThenDataClamp(AbsThenInPlaceRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        b = self.head(torch.abs(a))
        a.data.clamp_(min=0)  # its own version counter: a's does not move
        return b + a


class AbsThenNumpyClip(AbsThenInPlaceRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        b = self.head(torch.abs(a))
        a.numpy().clip(0, None, out=a.numpy())  # no version counter at all
        return b + a


@pytest.mark.parametrize("model", [AbsThenDataClamp, AbsThenNumpyClip])
def test_a_write_no_version_counter_sees_sends_the_scope_to_the_whole_check(model) -> None:
    torch.manual_seed(0)
    with pytest.raises(reparam.ReparamError, match="differs from the original after abs_to_relu"):
        reparam.deploy(model().eval(), torch.randn(2, 3, 8, 8), rules=_registry(AbsToRelu()))


class NegationsWritingTheirInput(DropNegations):
    """-(-x) -> neg(x.neg_()): its own result is right, but x is left negated."""

    name = "negations_writing_their_input"

    def rewrite(self, node: Node, ctx: RuleContext) -> Rewrite:
        x = node.args[0].args[0]
        written = ctx.tx.insert_function(torch.neg_, (x,), before=node)
        back = ctx.tx.insert_function(torch.neg, (written,), before=node)
        ctx.tx.redirect(node, back)
        ctx.erase_unused([node])
        return Rewrite(self.name, ctx.site_name(node), "-(-x) -> neg(x.neg_())")


class HeadAndTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.tail = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        negated = -a
        return self.head(-negated) + self.tail(a)  # tail reads a after the rewritten part


def _move_abs_after_the_write(ctx: RuleContext) -> None:
    graph = ctx.graph
    found = next(n for n in graph.nodes if n.target is torch.abs)
    write = next(n for n in graph.nodes if n.op == "call_method" and n.target == "add_")
    write.append(found)  # abs(a) now runs after a.add_(1)


class AbsBeforeAWrite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        b = torch.abs(a)
        c = a.add_(1)  # nothing reads a afterwards: kept in place
        negated = -b
        return self.head(-negated) + c


def _swap_the_class(ctx: RuleContext) -> None:
    ctx.root.get_submodule("act").__class__ = nn.Tanh


class PreActHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negated = -self.act(self.pre(x))
        return self.head(-negated)


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        (HeadAndTail, NegationsWritingTheirInput()),
        (AbsBeforeAWrite, DropNegations(_move_abs_after_the_write)),
        (PreActHead, DropNegations(_swap_the_class)),
    ],
    ids=["region-writes-its-input", "node-moved-across-a-write", "class-swapped"],
)
def test_a_buggy_rule_the_region_cannot_vouch_for_is_caught(model, rule) -> None:
    torch.manual_seed(0)
    with pytest.raises(reparam.ReparamError, match="differs from the original"):
        reparam.deploy(model().eval(), torch.randn(2, 3, 8, 8), rules=_registry(rule))


def _reads_the_root_conv(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
    return out + module.owner[0].conv.weight.mean()


class HookInsideALeaf(nn.Module):
    """A user's hook on a child of a built-in layer reads a conv the deploy merges."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.enc = nn.TransformerEncoderLayer(
            8, 2, 16, dropout=0.0, activation=torch.tanh, batch_first=True
        )
        self.enc.norm2.owner = [self]
        self.enc.norm2.register_forward_hook(_reads_the_root_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(self.bn(self.conv(x)).flatten(2).transpose(1, 2))


class HookOnARuntimeModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from reparam.runtime import GroupedPointwiseConv

        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pw = GroupedPointwiseConv(8, 8, 1, groups=2)
        self.pw.owner = [self]
        self.pw.register_forward_hook(_reads_the_root_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.bn(self.conv(x)))


@pytest.mark.parametrize("model", [HookInsideALeaf, HookOnARuntimeModule])
def test_a_hook_reaching_a_merged_module_is_reported(model) -> None:
    torch.manual_seed(0)
    m = model().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 2)
    with pytest.raises(reparam.ReparamError, match="differs from the original after conv_norm"):
        reparam.deploy(m, torch.randn(2, 3, 4, 4))


class ConjugateConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self._filter = torch.randn(8, dtype=torch.cfloat)  # plain attribute: a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return (y.to(torch.cfloat) * self._filter.conj().view(1, 8, 1, 1)).real


def test_a_tensor_it_cannot_fingerprint_is_checked_whole_not_a_crash() -> None:
    torch.manual_seed(0)
    model = ConjugateConstant().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired()["conv_norm"] == 1
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x))

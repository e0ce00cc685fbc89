"""The pattern layer: bindings, NoMatch reasons, alternatives, captures; near-misses in
explain(); the transaction's rollback."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import reparam
from reparam.convspec import is_plain_conv
from reparam.errors import Refusal, ReparamError
from reparam.graph.anchors import node_key
from reparam.graph.views import AffineView, SumView, channel_affine, is_sum_root
from reparam.patterns import (
    Affine,
    AllOf,
    Any_,
    AnyOf,
    Call,
    Capture,
    Given,
    Into,
    ListOf,
    Module,
    NoMatch,
    SingleUser,
    Sum,
    Through,
    Where,
    match,
)
from reparam.rules.base import RuleContext

CONV = Module(is_plain_conv, label="conv")


def _view(model: nn.Module) -> RuleContext:
    graph = fx.symbolic_trace(model).graph
    return RuleContext(model, graph)


def _node(ctx: RuleContext, name: str) -> fx.Node:
    return next(n for n in ctx.graph.nodes if n.name == name)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y), self.bn(self.act(y))


def test_bindings_name_nodes_modules_and_views():
    ctx = _view(ConvBN().eval())
    bound = match(Affine(CONV.bind("conv")).bind("norm"), _node(ctx, "bn"), ctx)
    assert bound and set(bound) == {"conv", "norm"}
    assert bound["conv"] is _node(ctx, "conv")
    assert bound.module("conv") is ctx.root.conv
    assert isinstance(bound["norm"], AffineView) and bound["norm"].kind == "batch_norm"


def test_no_match_says_which_step_failed_and_how_far_it_got():
    ctx = _view(ConvBN().eval())
    failed = match(Affine(CONV), _node(ctx, "bn_1"), ctx)
    assert isinstance(failed, NoMatch) and not failed
    assert failed.depth == 1
    assert str(failed) == "batch_norm 'bn' found, but its input is ReLU 'act', not a conv"
    # the anchor itself fails: depth 0
    assert match(Affine(CONV), _node(ctx, "conv"), ctx).depth == 0


def test_single_user_constraint_names_the_users():
    ctx = _view(ConvBN().eval())
    failed = match(Affine(SingleUser(CONV)), _node(ctx, "bn"), ctx)
    assert not failed and failed.depth == 2
    assert "Conv2d 'conv' found, but the output of Conv2d 'conv' has 2 users" in str(failed)
    assert match(Affine(CONV.single_user()), _node(ctx, "bn"), ctx).depth == 2


def test_training_norm_binds_its_refusal():
    model = ConvBN().train()
    ctx = _view(model)
    bound = match(Affine(CONV).bind("norm"), _node(ctx, "bn"), ctx)
    assert bound and isinstance(bound["norm"], Refusal)
    assert "training mode" in bound["norm"].reason


def test_eval_only_affine_leaves_a_norm_on_batch_statistics_to_other_readings():
    train = _view(ConvBN().train())
    failed = match(Affine(CONV, eval_only=True), _node(train, "bn"), train)
    assert not failed and failed.depth == 0 and "training mode" in failed.reason
    other = AnyOf(Affine(CONV, eval_only=True).bind("norm"), Module(nn.BatchNorm2d).bind("bn"))
    bound = match(other, _node(train, "bn"), train)
    assert bound and "norm" not in bound and bound["bn"] is _node(train, "bn")
    ctx = _view(ConvBN().eval())
    bound = match(Affine(CONV, eval_only=True).bind("norm"), _node(ctx, "bn"), ctx)
    assert bound and isinstance(bound["norm"], AffineView)


class Styles(nn.Module):
    """One sum and one scale written in other people's styles."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1))

    def forward(self, x):
        y = self.a(x)
        y += self.b(x)
        total = sum([y, x])
        return torch.mul(total, self.gamma)


def test_sum_sees_every_spelling_and_binds_each_term():
    ctx = _view(Styles())
    root = next(n for n in ctx.graph.nodes if is_sum_root(n))  # sum([..]) starts at 0 + ...
    term = AnyOf(CONV.bind("conv"), Any_().bind("other"))
    bound = match(Sum(term).bind("sum"), root, ctx)
    assert bound and isinstance(bound["sum"], SumView)
    kinds = sorted("conv" if "conv" in b else "other" for b in bound.each("sum"))
    assert kinds == ["conv", "conv", "other"]
    # every term a conv: the identity term is the step that fails
    failed = match(Sum(CONV), root, ctx)
    assert not failed and "its" not in failed.reason and "not a conv" in failed.reason


def test_scale_is_an_affine_and_kinds_filter_it():
    ctx = _view(Styles())
    mul = next(n for n in ctx.graph.nodes if n.target is torch.mul)
    bound = match(Affine(Sum()).bind("scale"), mul, ctx)
    assert bound and bound["scale"].kind == "channel_scale"
    assert not match(Affine(kinds=("batch_norm",)), mul, ctx)


def test_alternatives_report_the_one_that_got_furthest():
    ctx = _view(ConvBN().eval())
    pattern = AnyOf(Call(F.relu), Affine(CONV), Module(nn.Linear))
    failed = match(pattern, _node(ctx, "bn_1"), ctx)
    assert not failed and failed.depth == 1 and "not a conv" in failed.reason
    assert match(Capture("x", AnyOf(Module(nn.ReLU), CONV)), _node(ctx, "act"), ctx)["x"]


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        features = torch.flatten(self.pool(self.bn(x)), 1)
        return self.fc(features), F.relu(features)


def test_into_walks_to_the_consumer_and_through_walks_up():
    ctx = _view(Head().eval())
    via = Call(("flatten",)) | Module(nn.AdaptiveAvgPool2d)
    pattern = Into(Affine().bind("n"), Module(nn.Linear).bind("fc"), via=Call(("flatten",)))
    failed = match(pattern, _node(ctx, "bn"), ctx)
    assert not failed and "its user is AdaptiveAvgPool2d 'pool', not a Linear" in str(failed)
    pool = Module(nn.AdaptiveAvgPool2d)
    pooled = Into(pool, Module(nn.Linear).bind("fc"), via=Call(("flatten",))).bind("path")
    bound = match(pooled, _node(ctx, "pool"), ctx)
    assert not bound and "flatten 'flatten' has 2 users" in bound.reason
    assert via  # alternatives compose with |
    walk = Call(("flatten",), Module(nn.AdaptiveAvgPool2d))
    bound = match(Module(nn.Linear, walk.bind("flat")).bind("fc"), _node(ctx, "fc"), ctx)
    assert bound and bound["flat"].name == "flatten"
    up = Through(Call(("flatten",)), Module(nn.AdaptiveAvgPool2d)).bind("skipped")
    assert not match(up, _node(ctx, "flatten"), ctx)  # read twice: not skipped

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x).flatten(0, 1).reshape(-1, 2, 4)

    ctx = _view(Tokens())
    up = Through(Call(("flatten", "reshape")), Module(nn.Linear).bind("fc")).bind("skipped")
    bound = match(up, _node(ctx, "reshape"), ctx)
    assert bound and [n.name for n in bound["skipped"]] == ["reshape", "flatten"]


class Branches(nn.Module):
    """``fc(x) * 2 + conv(x) + x + y``: one term an FC, two read its input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.conv = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x, y):
        inner = x + y
        return self.bn(self.fc(x)).relu() + self.conv(x) + x + inner, inner


def _affine_input(node, view):
    found = channel_affine(node, view.root)
    return found.input if isinstance(found, AffineView) else node.args[0]


_POST = Where(lambda n, v: n.target == "relu" or channel_affine(n, v.root) is not None, "post")


def test_sum_some_term_with_back_references_and_whole_sums():
    ctx = _view(Branches().eval())
    root = next(n for n in ctx.graph.nodes if n.op == "output").args[0][0]
    one_by_one = Module(lambda m: isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1),
                        Any_().bind("z"), label="fc")
    fc = Through(_POST, one_by_one.bind("fc"), step=_affine_input)

    def partners(term, b, view):
        others = [t for t in b["sum"].terms if t is not term]
        reads = [t for t in others if t.op == "call_module" and t.args[:1] == (b["z"],)]
        return [t for t in others if t is b["z"]] + reads or None

    given = Given(partners, "terms reading the FC's input", reason="no term reads it")
    bound = match(Sum(some=AllOf(fc, given.bind("partners"))).bind("sum"), root, ctx)
    assert bound and bound["fc"].target == "fc"
    assert [t.name for t in bound["partners"]] == ["x", "conv"]
    failed = match(Sum(some=AllOf(fc, Given(lambda *a: None, "never", reason="no"))), root, ctx)
    assert not failed and failed.reason == "no" and failed.depth == 4  # sum, relu, bn, fc
    quiet = Given(lambda *a: None, "never", reason="no", quiet=True)
    failed = match(Sum(some=AllOf(fc, quiet)), root, ctx)  # another term's reason wins
    assert not failed and failed.reason != "no" and failed.depth == 1
    assert match(AllOf(fc, quiet), root.args[0].args[0].args[0], ctx).depth == 0
    inner = next(n for n in ctx.graph.nodes if n.name == "add")
    assert match(Sum(), inner, ctx) and match(Sum(whole=True), root, ctx)
    failed = match(Sum(whole=True), _node(ctx, "add_1"), ctx)
    assert not failed and "part of a larger sum" in failed.reason


def test_through_steps_along_a_chosen_input_and_may_share_the_first_node():
    ctx = _view(Branches().eval())
    relu = next(n for n in ctx.graph.nodes if n.target == "relu")
    bound = match(Through(_POST, Module(nn.Conv2d).bind("fc"), step=_affine_input), relu, ctx)
    assert bound and bound["fc"].name == "fc"
    root = next(n for n in ctx.graph.nodes if n.op == "output").args[0][0]
    placeholder = Where(lambda n, v: n.op == "placeholder", "an input").bind("input")
    last = Through(Call(("add",)), placeholder, exclusive=False, step=lambda n, v: n.args[-1])
    bound = match(last.bind("adds"), root, ctx)
    assert bound and bound["input"].name == "y" and len(bound["adds"]) == 2
    assert not match(Through(Call(("add",)), placeholder, exclusive=False), root, ctx)

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            y = self.fc(x) / 2
            return y, y * 3

    ctx = _view(Shared())
    div = next(n for n in ctx.graph.nodes if n.name == "truediv")
    halves = Call(("truediv",))
    assert not match(Through(halves, Module(nn.Linear), min_steps=1), div, ctx)
    assert match(Through(halves, Module(nn.Linear), exclusive="below", min_steps=1), div, ctx)
    ctx.graph.call_function(torch.neg, (next(n for n in ctx.graph.nodes if n.name == "fc"),))
    failed = match(Through(halves, Module(nn.Linear), exclusive="below"), div, ctx)
    assert not failed and "'fc' has 2 users" in failed.reason


def test_list_arguments_and_opaque_modules():
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    model = Cat()
    model.b.register_forward_hook(lambda m, i, o: o)
    ctx = _view(model)
    cat = next(n for n in ctx.graph.nodes if n.target is torch.cat)
    failed = match(Call(torch.cat, ListOf(CONV, min_len=2)), cat, ctx)
    assert not failed and "conv 'b'" in failed.reason and "hook" in failed.reason
    assert not failed.refusal
    refusing = Module(is_plain_conv, label="conv", refuse_opaque=True)
    assert match(Call(torch.cat, ListOf(refusing)), cat, ctx).refusal
    model.b._forward_hooks.clear()
    bound = match(Call(torch.cat, ListOf(CONV.bind("c")).bind("parts")), cat, ctx)
    assert bound and [b["c"].name for b in bound.each("parts")] == ["a", "b"]


def test_transaction_rolls_back_modules_and_graph():
    model = ConvBN().eval()
    ctx = _view(model)
    before = str(ctx.graph)
    old_conv = model.conv
    tx = ctx.begin()
    tx.place("conv", nn.Conv2d(3, 4, 1))
    path = tx.substitute(_node(ctx, "act"), nn.Tanh(), stem="fresh", exclusive=False)
    tx.redirect(_node(ctx, "bn"), _node(ctx, "conv"))
    tx.erase_unused([_node(ctx, "bn")])
    assert path == "fresh" and isinstance(model.fresh, nn.Tanh) and "fresh" in ctx.created
    tx.rollback()
    assert model.conv is old_conv and not hasattr(model, "fresh") and not ctx.created
    assert str(ctx.graph) == before and "erased" not in str(ctx.graph)
    with pytest.raises(ReparamError, match="rolled back"):
        tx.place("conv", nn.Identity())


def test_explain_lists_near_misses_with_the_failed_step():
    model = Head().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 5, 5)
    explanation = reparam.explain(model, x)
    near = explanation.near("bn")
    assert [n.rule for n in near] == ["norm_linear"]
    assert near[0].reason == (
        "batch_norm 'bn' → AdaptiveAvgPool2d 'pool' → flatten 'flatten' found, "
        "but the output of flatten 'flatten' has 2 users, not 1"
    )
    assert "near   norm_linear" in str(explanation)
    # once the norm has a single path to the linear, it folds: no near-miss is left
    class Folding(Head):
        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.bn(x)), 1))

    folding = Folding().eval()
    folding.load_state_dict(model.state_dict())
    explanation = reparam.explain(folding, x)
    assert [s.rule for s in explanation.fired()] == ["norm_linear"] and not explanation.near()


def test_full_report_lists_near_misses():
    model = Head().eval()
    report = reparam.deploy_with_report(model, torch.randn(1, 4, 3, 3)).report
    assert [o.rule for o in report.open_near_misses()] == ["norm_linear"]
    text = report.render(width=200, full=True)
    assert "near-misses" in text and "flatten 'flatten' has 2 users" in text
    assert "near-misses" not in report.render(width=200)


# -- the driver's anchor prefilter ---------------------------------------------------------


def _zoo_models():
    from reparam.testing.zoo import ZOO
    from reparam.testing.zoo_linear import LINEAR_ZOO

    for name, build in sorted({**ZOO, **LINEAR_ZOO}.items()):
        yield name, build()


def test_may_anchor_never_hides_a_match_a_refusal_or_a_near_miss() -> None:
    """Wherever a built-in pattern rule matches, refuses or nearly matches, its pattern's
    cheap anchor test says "maybe": skipping a node the anchor rejects loses nothing."""
    from reparam.graph.capture import capture
    from reparam.rules import default_registry

    rules = [r for r in default_registry() if getattr(r, "graph_pattern", None) is not None]
    assert len(rules) >= 10
    seen = 0
    for name, model in _zoo_models():
        try:
            graph = capture(model).graph
        except Exception:  # noqa: BLE001 - needs example inputs to trace: other tests cover it
            continue
        ctx = RuleContext(model.eval(), graph)
        for node in ctx.graph.nodes:
            for rule in rules:
                result = rule.match(node, ctx)
                found = bool(result) or (
                    isinstance(result, NoMatch)
                    and (result.refusal or result.depth >= rule.near_miss_depth)
                )
                if found:
                    seen += 1
                    assert rule.graph_pattern.may_anchor(node, ctx.root), (name, rule, node)
                    keys = rule.graph_pattern.anchor_keys()
                    assert keys is None or node_key(node) in keys, (name, rule, node)
    assert seen > 20


def test_anchor_keys_hold_every_node_the_anchor_test_accepts() -> None:
    """The driver offers a rule only the nodes its pattern's keys name: every node the
    pattern's anchor test accepts has one of them (so the index hides no try), and a rule
    anchored at a conv is not offered the adds."""
    from reparam.graph.anchors import AnchorIndex
    from reparam.graph.capture import capture
    from reparam.rules import default_registry

    rules = [r for r in default_registry() if getattr(r, "graph_pattern", None) is not None]
    keyed = [r for r in rules if r.graph_pattern.anchor_keys() is not None]
    assert len(keyed) == len(rules)  # every built-in rule is indexed
    offered = total = 0
    for name, model in _zoo_models():
        try:
            graph = capture(model).graph
        except Exception:  # noqa: BLE001 - needs example inputs to trace
            continue
        index = AnchorIndex(graph)
        for rule in keyed:
            chosen = set(index.candidates(rule.graph_pattern.anchor_keys()))
            offered += len(chosen)
            total += len(index.nodes)
            for node in index.nodes:
                if rule.graph_pattern.may_anchor(node, model):
                    assert node in chosen, (name, rule.name, node.name)
    assert offered < total / 3  # the index narrows the search


def test_anchor_index_keeps_graph_order_and_keys_functions_by_name() -> None:
    class Net(nn.Module):
        def forward(self, x):
            y = torch.add(x, 1)
            z = y.add(2)
            w = y * z
            return operator.add(w, z).relu()

    graph = fx.symbolic_trace(Net()).graph
    from reparam.graph.anchors import AnchorIndex, function_keys

    index = AnchorIndex(graph)
    adds = index.candidates(function_keys([torch.add], methods=["add"]))
    assert [n.name for n in adds] == ["add", "add_1", "add_2"]
    by_name = index.candidates(function_keys(names=["add"]))
    assert by_name == adds
    assert Sum().anchor_keys() >= {node_key(n) for n in adds}
    assert [n.name for n in index.candidates(Affine().anchor_keys())] == ["mul"]
    assert index.candidates(frozenset()) == []
    assert index.candidates(None) == index.nodes


def _refuser(shape):
    from reparam.rules.base import PatternRule

    class Refuser(PatternRule):
        name = "refuser"
        summary = pattern = "refuses wherever its pattern matches"
        graph_pattern = shape

        def check(self, m, ctx):
            return Refusal("found")

        def rewrite(self, plan, ctx):
            raise AssertionError("never")

    return Refuser()


class _ReluLike(Call):
    """A user's Call that also accepts ``x.clamp_min(0)``: it changes what it accepts and
    not its anchor keys."""

    def accepts(self, node):
        if node.op == "call_method" and node.target == "clamp_min" and node.args[1:] == (0,):
            return True
        return super().accepts(node)


def test_a_subclass_that_accepts_more_is_offered_every_node(monkeypatch) -> None:
    class Clamped(nn.Module):
        def forward(self, x):
            return x.clamp_min(0) * 2

    monkeypatch.setenv("REPARAM_CHECK_MEMO", "0")  # the index alone must not hide the node
    rule = _refuser(_ReluLike(torch.relu).bind("act"))
    assert rule.graph_pattern.anchor_keys() is None
    report = reparam.deploy_with_report(Clamped(), torch.randn(2, 3), rules=[rule]).report
    assert [(o.site, o.reason) for o in report.refusals] == [("<model>:clamp_min", "found")]


def test_checking_mode_catches_where_keys_that_leave_a_node_out(monkeypatch) -> None:
    """A ``Where`` whose keys miss nodes its predicate accepts: at the anchor, and as the
    skip of a ``Through`` that must take a step."""
    from reparam.graph.anchors import function_keys
    from reparam.try_memo import StaleMemoError

    class Scaled(nn.Module):
        def forward(self, x):
            return torch.mul(x, 3.0).relu()

    is_mul = Where(lambda n, v: n.op == "call_function" and n.target is torch.mul, "a mul")
    wrong = function_keys(methods=["mul"])  # torch.mul is a call_function
    patterns = [
        Where(is_mul.predicate, "a mul", keys=wrong).bind("mul"),
        Through(Where(is_mul.predicate, "a mul", keys=wrong), Any_(), min_steps=1),
    ]
    for pattern in patterns:
        monkeypatch.setenv("REPARAM_CHECK_MEMO", "1")
        with pytest.raises(StaleMemoError, match="anchor key"):
            reparam.deploy(Scaled(), torch.randn(2, 3), rules=[_refuser(pattern)])
        # right keys: found, and no error
        right = function_keys([torch.mul])
        fixed = Where(is_mul.predicate, "a mul", keys=right).bind("mul")
        report = reparam.deploy_with_report(
            Scaled(), torch.randn(2, 3), rules=[_refuser(fixed)]
        ).report
        assert [o.reason for o in report.refusals] == ["found"]


def test_checking_mode_catches_anchor_keys_that_leave_a_node_out(monkeypatch) -> None:
    """A custom pattern whose keys miss a node its anchor test accepts would hide tries:
    the suite's checking mode (REPARAM_CHECK_MEMO=1) says so instead."""
    from reparam.rules.base import PatternRule
    from reparam.try_memo import StaleMemoError

    class OnlyAdds(Module):
        def anchor_keys(self):
            return Sum().anchor_keys()  # wrong: the anchor is a module call

    class Refuser(PatternRule):
        name = "refuser"
        summary = pattern = "conv(x)"
        graph_pattern = OnlyAdds(nn.Conv2d).bind("conv")

        def check(self, m, ctx):
            return Refusal("never")

        def rewrite(self, plan, ctx):
            raise AssertionError("never")

    monkeypatch.setenv("REPARAM_CHECK_MEMO", "1")
    with pytest.raises(StaleMemoError, match="anchor keys"):
        reparam.deploy(ConvBN().eval(), torch.randn(1, 3, 8, 8), rules=[Refuser()])
    monkeypatch.setenv("REPARAM_CHECK_MEMO", "0")
    report = reparam.deploy_with_report(
        ConvBN().eval(), torch.randn(1, 3, 8, 8), rules=[Refuser()]
    ).report
    assert not report.refusals  # the unsound keys hid the conv from the rule


def test_module_anchor_runs_a_function_kind_on_the_module() -> None:
    """``Module(fn)``: the driver's cheap anchor test already rejects a module ``fn`` rejects
    (a hooked module too: the match would test that same module)."""
    model = ConvBN().eval()
    ctx = _view(model)
    pointwise = Module(lambda m: isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))
    assert not pointwise.may_anchor(_node(ctx, "conv"), ctx.root)  # a 3×3 conv
    assert CONV.may_anchor(_node(ctx, "conv"), ctx.root)
    assert not CONV.may_anchor(_node(ctx, "bn"), ctx.root)
    model.conv.register_forward_hook(lambda m, i, o: o)
    assert CONV.may_anchor(_node(ctx, "conv"), ctx.root)
    refusing = Module(is_plain_conv, label="conv", refuse_opaque=True)
    assert match(refusing, _node(ctx, "conv"), ctx).refusal


def test_a_pattern_rule_may_build_its_pattern_from_its_options() -> None:
    """A ``graph_pattern`` set per instance (it depends on the rule's options): ``match`` and
    the driver's anchor test read the instance's."""
    from reparam.rules.base import PatternRule

    class RefuseKind(PatternRule):
        name = "refuse_kind"
        summary = pattern = "kind(x)"

        def __init__(self, kind: type[nn.Module]) -> None:
            self.graph_pattern = Module(kind, Any_()).bind("layer")

        def check(self, m, ctx):
            return Refusal(f"a {type(m.module('layer')).__name__}")

        def rewrite(self, plan, ctx):
            raise AssertionError("never")

    model = nn.Sequential(nn.Tanh(), nn.ReLU()).eval()
    ctx = _view(model)
    assert RefuseKind(nn.ReLU).match(_node(ctx, "_1"), ctx)
    assert not RefuseKind(nn.Tanh).match(_node(ctx, "_1"), ctx)
    assert not RefuseKind(nn.Tanh).graph_pattern.may_anchor(_node(ctx, "_1"), ctx.root)
    x = torch.randn(2, 3)
    for kind, site in [(nn.ReLU, "1"), (nn.Tanh, "0")]:
        report = reparam.deploy_with_report(model, x, rules=[RefuseKind(kind)]).report
        assert [(o.site, o.reason) for o in report.refusals] == [(site, f"a {kind.__name__}")]

"""The float64 check: cannot cry wolf, cannot be fooled, never writes the caller's tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reparam

from ._common import count, outputs_agree, prepared


class Body(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(self.conv(x))


class TopKHead(nn.Module):
    """A detection-style head: a discontinuous top-k of near-tied scores after the body."""

    def __init__(self):
        super().__init__()
        self.body = Body()

    def forward(self, x):
        scores = self.body(x).flatten(1)
        scores = scores.round(decimals=3)  # ties
        return scores.topk(5, dim=1).indices


class MakesTensors(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Body()

    def forward(self, x):
        bias = torch.zeros(x.shape[1])  # default dtype
        return self.body(x).float() + bias.view(1, -1, 1, 1)


class ListInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = Body(), Body()

    def forward(self, feats):
        return [self.a(feats[0]), self.b(feats[1])]


def test_discontinuous_output_does_not_cry_wolf():
    model = prepared(TopKHead()).float()
    x = torch.randn(2, 4, 6, 6)
    result = reparam.deploy_with_report(model, x)
    assert count(result.model, nn.BatchNorm2d) == 0
    assert result.report.checked_scopes >= 1


def test_tensors_made_in_forward_and_float_calls():
    model = prepared(MakesTensors()).float()
    x = torch.randn(2, 4, 6, 6)
    deployed = reparam.deploy(model, x)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x))


def test_list_of_tensors_input():
    model = prepared(ListInput())
    feats = [
        torch.randn(2, 4, 6, 6, dtype=torch.float64),
        torch.randn(2, 4, 3, 3, dtype=torch.float64),
    ]
    deployed = reparam.deploy(model, (feats,))
    assert count(deployed, nn.BatchNorm2d) == 0
    outputs_agree(model, deployed, (feats,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model(dtype):
    model = prepared(nn.Sequential(Body(), nn.ReLU(), Body())).to(dtype)
    x = torch.randn(2, 4, 6, 6, dtype=dtype)
    deployed = reparam.deploy(model, x)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x).float(), model(x).float(), rtol=2e-2, atol=2e-2)


def test_caller_tensors_never_written():
    class Writes(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Body()

        def forward(self, x):
            x.add_(1.0)
            return self.body(x)

    model = prepared(Writes())
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    keep = x.clone()
    reparam.deploy(model, x)
    assert torch.equal(x, keep)


def test_wrong_rule_is_caught_on_the_scopes_own_inputs():
    from reparam.rules.conv_norm import FoldNormAfterConv

    class Wrong(FoldNormAfterConv):
        name = "wrong_conv_norm"

        def check(self, m, ctx):
            plan = super().check(m, ctx)
            if plan:
                with torch.no_grad():
                    plan.new_module.weight.mul_(1.001)
            return plan

    model = prepared(nn.Sequential(Body(), Body()))
    with pytest.raises(reparam.ReparamError, match="wrong_conv_norm"):
        reparam.deploy(model, torch.randn(1, 4, 5, 5, dtype=torch.float64), rules=[Wrong()])


def test_without_inputs_the_report_says_nothing_was_checked():
    result = reparam.deploy_with_report(prepared(Body()))
    assert any("nothing was checked numerically" in n for n in result.report.notes)
    with pytest.raises(reparam.ReparamError, match="verify=True"):
        reparam.deploy(prepared(Body()), verify=True)


class _PoolAsSevenBySeven(reparam.Rule):
    """A wrong rule: ``AdaptiveAvgPool2d(1)`` as ``avg_pool2d(x, 7)`` — right on a 7×7 map
    only."""

    name = "pool_as_7x7"
    summary = "a global average pool as a fixed 7×7 window (only right on 7×7 maps)"
    pattern = "AdaptiveAvgPool2d(1)(x)"

    def match(self, node, ctx):
        if node.op == "call_module" and isinstance(ctx.module(node.target), nn.AdaptiveAvgPool2d):
            return node
        return None

    def check(self, node, ctx):
        return node

    def rewrite(self, node, ctx):
        with ctx.graph.inserting_before(node):
            pooled = ctx.graph.call_function(torch.nn.functional.avg_pool2d, (node.args[0], 7))
        node.replace_all_uses_with(pooled)
        ctx.erase_unused([node])
        return reparam.Rewrite(self.name, ctx.site_name(node), "pool as 7×7")


class _PooledBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


class _CropAndFull(nn.Module):
    """One head called on a 7×7 crop, then on the full map (same call pattern, two shapes)."""

    def __init__(self):
        super().__init__()
        self.head = _PooledBody()

    def forward(self, x):
        return self.head(x[..., :7, :7]) + self.head(x)


@pytest.mark.parametrize("full", [7, 14])
def test_a_scope_is_checked_at_every_shape_it_was_called_at(full):
    """The first call of ``head`` is 7×7, where the wrong rule is right; the check must also
    run the second call's 14×14 input (and on a 7×7 model there is nothing to catch)."""
    model = _CropAndFull().double().eval()
    x = torch.randn(2, 4, full, full, dtype=torch.float64)
    if full == 7:
        result = reparam.deploy_with_report(model, x, rules=[_PoolAsSevenBySeven()])
        assert result.report.fired() == {"pool_as_7x7": 1}
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-9, atol=0)
        return
    with pytest.raises(reparam.ReparamError, match="pool_as_7x7"):
        reparam.deploy(model, x, rules=[_PoolAsSevenBySeven()])

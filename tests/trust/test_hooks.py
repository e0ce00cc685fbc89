"""Hooks and weights a hook refreshes: the layer is kept as it is (never silently dropped)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
from torch import nn

import reparam

from ._common import count, outputs_agree, prepared


class ConvBN(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def test_forward_hook_on_a_folded_conv_is_kept():
    model = prepared(nn.Sequential(ConvBN(), ConvBN()))
    model[0].conv.register_forward_hook(lambda m, i, o: o * 2.0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    outputs_agree(model, result.model, x, torch.randn(3, 4, 5, 7, dtype=torch.float64))
    assert result.model[0].conv._forward_hooks  # the hook still runs
    assert count(result.model, nn.BatchNorm2d) == 1  # the other block still merged
    reasons = " ".join(r.reason for r in result.report.refusals)
    assert "forward hook" in reasons


def test_pre_hook_on_a_norm_is_kept():
    model = prepared(ConvBN())

    def shift(module, args):
        return (args[0] + 1.0,)

    model.bn.register_forward_pre_hook(shift)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(2, 4, 9, 9, dtype=torch.float64))
    assert isinstance(deployed.bn, nn.BatchNorm2d)


def test_recording_hook_sees_no_proxy_and_model_unchanged():
    seen: list = []
    model = prepared(nn.Sequential(ConvBN(), ConvBN()))
    model[1].register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    assert all(isinstance(t, torch.Tensor) for t in seen)
    seen.clear()
    deployed(x)
    assert len(seen) == 1 and isinstance(seen[0], torch.Tensor)  # the hook still records
    outputs_agree(model, deployed, x)


def test_old_style_weight_norm_uses_the_fresh_weight():
    model = prepared(ConvBN())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.nn.utils.weight_norm(model.conv)
    with torch.no_grad():
        model.conv.weight_g.mul_(3.0)  # the stale .weight attribute is now wrong
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 11, 11, dtype=torch.float64))


def test_uncopyable_module_is_one_clear_error():
    class Handle:
        def __deepcopy__(self, memo):
            raise TypeError("cannot pickle '_thread.lock' object")

    model = prepared(nn.Sequential(ConvBN(), ConvBN()))
    model[1].handle = Handle()
    with pytest.raises(reparam.ReparamError, match="'1'.*deep-copied"):
        reparam.deploy(model, torch.randn(1, 4, 4, 4, dtype=torch.float64))


def test_new_style_weight_norm_is_exact():
    model = prepared(ConvBN())
    torch.nn.utils.parametrizations.weight_norm(model.conv)
    with torch.no_grad():
        model.conv.parametrizations.weight.original0.mul_(3.0)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 11, 11, dtype=torch.float64))


def test_spectral_norm_is_kept():
    model = prepared(ConvBN())
    torch.nn.utils.spectral_norm(model.conv)
    model.eval()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 3, 3, dtype=torch.float64))


def test_pruned_conv_uses_its_mask():
    model = prepared(ConvBN())
    torch.nn.utils.prune.random_unstructured(model.conv, "weight", amount=0.5)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(4, 4, 5, 5, dtype=torch.float64))


def test_hook_on_a_user_block_keeps_the_block_callable():
    calls = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = ConvBN(), ConvBN()

        def forward(self, x):
            return self.b(self.a(x)) + x

    model = prepared(Net())
    model.a.register_forward_pre_hook(lambda m, args: calls.append(1))
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    calls.clear()
    deployed(x)
    assert calls == [1]
    outputs_agree(model, deployed, x, torch.randn(2, 4, 7, 7, dtype=torch.float64))

"""Layers that look built-in but compute something else are seen as they really run."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import reparam

from ._common import outputs_agree, prepared


class StdConv2d(nn.Conv2d):
    """Weight standardization (Qiao et al., arXiv:1903.10520) by overriding _conv_forward."""

    def _conv_forward(self, x, weight, bias):
        w = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledWeightConv(nn.Conv2d):
    """A conv whose ``weight`` is a property computed from a raw parameter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), 0.5))

    def forward(self, x):  # forward of its own: traced through
        return self._conv_forward(x, self.weight * self.gain, self.bias)


def _block(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU())


def test_weight_standardized_conv_is_not_folded_as_a_plain_conv():
    model = prepared(_block(StdConv2d(3, 6, 3, padding=1)))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 3, 5, 9, dtype=torch.float64))


def test_conv_with_a_computed_weight_is_exact():
    model = prepared(_block(ScaledWeightConv(3, 6, 3, padding=1)))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(3, 3, 6, 6, dtype=torch.float64))


class _Symmetric(nn.Module):
    def forward(self, w):
        return (w + w.flip(-1)) / 2


def test_parametrized_conv_is_exact():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    model = prepared(_block(conv))
    parametrize.register_parametrization(model[0], "weight", _Symmetric())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 4, 4, dtype=torch.float64))


def test_trust_model_names_the_override():
    from reparam.graph.trust import is_trusted_leaf, untrusted_reason

    assert is_trusted_leaf(nn.Conv2d(1, 1, 1))
    assert not is_trusted_leaf(StdConv2d(1, 1, 1))
    assert "_conv_forward" in untrusted_reason(StdConv2d(1, 1, 1))

"""A module used from outside the graph being rewritten is never changed by that rewrite."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reparam

from ._common import outputs_agree, prepared


class Block(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CallsGrandchild(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x) + self.block.conv(x)  # the raw conv, without its norm


class ReadsGrandchildWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        gate = torch.sigmoid(self.block.bn.weight).view(1, -1, 1, 1)
        return self.block(x) * gate


class ReadsGrandchildWeightsInAList(nn.Module):
    """The child's norm weight reaches an op inside a list, and its conv bias by keyword."""

    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        both = torch.cat([self.block.bn.weight, torch.ones(4, dtype=x.dtype)])
        shift = torch.add(input=torch.zeros(4, dtype=x.dtype), other=self.block.conv.bias)
        return self.block(x) * both[:4].view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _check(model, x, *others):
    model = prepared(model)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, *others)
    return deployed


def test_parent_calls_the_childs_conv_directly():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    _check(CallsGrandchild(), x, torch.randn(1, 4, 9, 5, dtype=torch.float64))


def test_parent_reads_the_childs_norm_weight():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = _check(ReadsGrandchildWeight(), x, torch.randn(3, 4, 4, 4, dtype=torch.float64))
    assert deployed.block.bn.weight is not None


def test_parent_reads_the_childs_tensors_inside_a_list_and_by_keyword():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    model = ReadsGrandchildWeightsInAList()
    deployed = _check(model, x, torch.randn(3, 4, 4, 4, dtype=torch.float64))
    assert deployed.block.bn.weight is not None  # read from outside the block: kept
    assert deployed.block.conv.bias is not None


def test_instance_level_forward_is_respected():
    model = prepared(nn.Sequential(Block(), Block()))
    original_forward = model[1].forward
    model[1].forward = lambda x: original_forward(x) * 3.0
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    outputs_agree(model, result.model, x, torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert any("instance-level" in r for _, r in result.report.skipped_scopes)

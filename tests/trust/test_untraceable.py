"""A child whose forward cannot be traced is called as it is; everything around it merges."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reparam

from ._common import count, outputs_agree, prepared, skipped


class DataDependent(nn.Module):
    """Branches on tensor data: no trace can stand for it."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        if x.mean() > 0:
            return self.bn(self.conv(x))
        return x


class Around(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv_a = nn.Conv2d(c, c, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(c)
        self.odd = DataDependent(c)
        self.conv_b = nn.Conv2d(c, c, 1)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.odd(y)
        return self.bn_b(self.conv_b(y)) + x


def test_structures_around_an_untraceable_child_still_merge():
    model = prepared(Around())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    assert "data-dependent" in skipped(result.report, "odd")
    assert count(result.model, nn.BatchNorm2d) == 1  # only the one inside the opaque child
    outputs_agree(model, result.model, x, -x, torch.randn(1, 4, 9, 9, dtype=torch.float64))


def test_rank3_activation_times_a_c11_tensor_is_not_a_channel_scale():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 4, 3, padding=1)
            self.gamma = nn.Parameter(torch.rand(4, 1, 1) + 0.5)

        def forward(self, x):
            return self.conv(x) * self.gamma  # (N, 4, L) * (4, 1, 1) -> (4, 4, L) for N = 4

    model = prepared(Scaled())
    x = torch.randn(4, 4, 7, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x)


def test_negative_pad_is_not_folded_into_conv_padding():
    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.conv(F.pad(x, [-1, -1, -1, -1]))

    model = prepared(Crop())
    x = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(2, 4, 6, 8, dtype=torch.float64))

"""In-place writes: no merge moves a read past a write to the same tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reparam

from ._common import outputs_agree, prepared


class ReluBetweenReads(nn.Module):
    """Two convs read ``y``; an in-place relu writes ``y`` between the reads."""

    def __init__(self, c=4):
        super().__init__()
        self.pre = nn.Conv2d(c, c, 1)
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 1)

    def forward(self, x):
        y = self.pre(x)
        first = self.a(y)
        y.relu_()
        return first + self.b(y)


class IaddIdentity(nn.Module):
    """``out += identity`` where ``identity`` aliases a tensor read again afterwards."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.other = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.other(x)
        out = h
        out += self.bn(self.conv(x))  # writes h too
        return out + h


class WritesIntoInput(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn(self.conv(x))
        x.mul_(2.0)
        return y + x


class SliceAssignedBorder(nn.Module):
    """DBB-style BN-and-pad: pad, then fill the border with the norm's value at zero."""

    def __init__(self, c=4, p=1):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.p = p
        self.conv = nn.Conv2d(c, c, 3)

    def forward(self, x):
        out = self.bn(x)
        p = self.p
        out = F.pad(out, [p, p, p, p])
        fill = (
            self.bn.bias
            - self.bn.running_mean * self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        ).view(1, -1, 1, 1)
        out[:, :, 0:p, :] = fill
        out[:, :, -p:, :] = fill
        out[:, :, :, 0:p] = fill
        out[:, :, :, -p:] = fill
        return self.conv(out)


def _check(model, x, *others):
    model = prepared(model)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, *others)
    return deployed


def test_relu_in_place_between_two_reads():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    _check(ReluBetweenReads(), x, torch.randn(1, 4, 3, 9, dtype=torch.float64))


def test_iadd_on_an_alias():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    _check(IaddIdentity(), x, torch.randn(3, 4, 5, 5, dtype=torch.float64))


def test_write_into_the_input_is_kept_and_callers_tensor_untouched_by_deploy():
    model = prepared(WritesIntoInput())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    keep = x.clone()
    result = reparam.deploy_with_report(model, x)
    assert torch.equal(x, keep)  # deploy never writes into the caller's tensors
    assert any("in place" in r for _, r in result.report.skipped_scopes)
    outputs_agree(model, result.model, x)


def test_slice_assigned_border_is_captured_exactly():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    _check(SliceAssignedBorder(), x, torch.randn(1, 4, 9, 7, dtype=torch.float64))

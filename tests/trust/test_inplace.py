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


class FlatSliceFilledBorder(nn.Module):
    """DBB's 1x1 → BN → pad branch in one forward, the border set to BN(0) by four slice
    assignments (the in-place writes become ``setitem_out_of_place`` nodes)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        bn = self.bn
        y = bn(self.c1(x))
        fill = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fill = fill.view(1, -1, 1, 1)
        y = F.pad(y, [1, 1, 1, 1])
        y[:, :, 0:1, :] = fill
        y[:, :, -1:, :] = fill
        y[:, :, :, 0:1] = fill
        y[:, :, :, -1:] = fill
        return self.c2(y)


def test_slice_filled_border_in_one_scope_merges_into_one_conv_and_pickles():
    """The functionalized writes are recognised by the border-fill rule in the very scope
    that captured them, and the deployed forward saves and loads (its nodes call the
    module-level function, not a tracing wrapper of it)."""
    from tests.engine.helpers import reloaded

    model = prepared(FlatSliceFilledBorder())
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    assert "border_fill_as_pad" in [r.rule for r in result.report.rewrites]
    assert sum(isinstance(m, nn.Conv2d) for m in result.model.modules()) == 1
    outputs_agree(model, result.model, x, torch.randn(1, 4, 5, 11, dtype=torch.float64))
    outputs_agree(model, reloaded(result.model), x)


def test_deployed_dbb_with_slice_assigned_border_pickles():
    from reparam.testing.zoo import ZOO
    from tests.engine.helpers import reloaded

    model = ZOO["dbb_slice_assign"]().eval()
    x = torch.randn(2, 3, 16, 16, dtype=next(model.parameters()).dtype)
    deployed = reparam.deploy(model, x)
    torch.testing.assert_close(reloaded(deployed)(x), model(x), rtol=1e-5, atol=1e-5)

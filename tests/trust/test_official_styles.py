"""Blocks written the way the papers' official code writes them deploy fully.

Written from the papers' descriptions in their authors' style (no code copied): RepMLPNet's
block reshaping with ``*inputs.size()`` and accumulating ``conv_out += ...`` (arXiv
2112.11081), DBB's BN-and-pad filling borders by slice assignment (arXiv 2103.13425), and an
OREPA-style kernel whose group size comes from ``int(t / g)`` on parameter shapes (arXiv
2204.00826).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reparam
from reparam_models.layers import RepMLPBlock

from ._common import count, outputs_agree, prepared


class AuthorsRepMLPBlock(RepMLPBlock):
    def forward(self, inputs):
        global_vec = self.gp(inputs)
        origin_shape = inputs.size()
        h_parts = origin_shape[2] // self.h
        w_parts = origin_shape[3] // self.w
        partitions = inputs.reshape(-1, self.C, h_parts, self.h, w_parts, self.w)
        partitions = partitions.permute(0, 2, 4, 1, 3, 5)
        fc_inputs = partitions.reshape(-1, self.S * self.h * self.w, 1, 1)
        out = self.fc3(fc_inputs).reshape(-1, self.S, self.h, self.w)
        out = self.fc3_bn(out)
        out = out.reshape(-1, h_parts, w_parts, self.S, self.h, self.w)
        conv_inputs = partitions.reshape(-1, self.S, self.h, self.w)
        conv_out = 0
        for k in self.reparam_conv_k:
            conv_out += getattr(self, f"repconv{k}")(conv_inputs)
        conv_out = conv_out.reshape(-1, h_parts, w_parts, self.S, self.h, self.w)
        out += conv_out
        out = out.permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(*origin_shape)
        return out * global_vec


def test_repmlp_block_in_the_authors_style_gets_locality_injection():
    model = prepared(AuthorsRepMLPBlock(8, 4, 4, num_sharesets=2, reparam_conv_k=(1, 3)))
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    fired = {r.rule for r in result.report.rewrites}
    assert fired & {"locality_injection", "affine_branch_fc"}, result.report
    assert not hasattr(result.model, "repconv3") and not hasattr(result.model, "repconv1")
    assert count(result.model, nn.BatchNorm2d) == 0
    outputs_agree(model, result.model, x, torch.randn(3, 8, 12, 4, dtype=torch.float64))


class BNAndPad(nn.Module):
    def __init__(self, c: int, pad: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.pad = pad

    def forward(self, x):
        out = self.bn(x)
        if self.pad > 0:
            p = self.pad
            value = self.bn.bias.detach() - self.bn.running_mean * self.bn.weight.detach() / (
                torch.sqrt(self.bn.running_var + self.bn.eps)
            )
            out = F.pad(out, [p] * 4)
            value = value.view(1, -1, 1, 1)
            out[:, :, 0:p, :] = value
            out[:, :, -p:, :] = value
            out[:, :, :, 0:p] = value
            out[:, :, :, -p:] = value
        return out


class DBBStyle(nn.Module):
    """DBB without its avg-pool branch: k×k, 1×1 and 1×1 → BN-and-pad → k×k."""

    def __init__(self, c: int = 4, k: int = 3) -> None:
        super().__init__()
        self.dbb_origin = nn.Sequential(
            nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c)
        )
        self.dbb_1x1 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module("conv1", nn.Conv2d(c, c, 1, bias=False))
        self.dbb_1x1_kxk.add_module("bn1", BNAndPad(c, k // 2))
        self.dbb_1x1_kxk.add_module("conv2", nn.Conv2d(c, c, k, bias=False))
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(c))

    def forward(self, inputs):
        out = self.dbb_origin(inputs)
        out += self.dbb_1x1(inputs)
        out += self.dbb_1x1_kxk(inputs)
        return F.relu(out)


def test_dbb_block_with_slice_assigned_borders_merges_to_one_conv():
    model = prepared(DBBStyle())
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    assert count(deployed, nn.Conv2d) == 1
    assert count(deployed, nn.BatchNorm2d) == 0
    outputs_agree(model, deployed, x, torch.randn(1, 4, 5, 11, dtype=torch.float64))


class OREPAStyleConv(nn.Module):
    """A k×k kernel built in forward from a basis and group-wise coefficients."""

    def __init__(self, c_in: int = 4, c_out: int = 8, k: int = 3, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.weight_origin = nn.Parameter(torch.randn(c_out, c_in // groups, k, k) * 0.2)
        self.weight_1x1 = nn.Parameter(torch.randn(c_out, c_in // groups, 1, 1) * 0.2)
        self.vector = nn.Parameter(torch.rand(2, c_out))
        self.bn = nn.BatchNorm2d(c_out)

    def weight_gen(self):
        t = self.weight_origin.shape[0]
        g = self.groups
        per_group = int(t / g)  # the authors' style: int() on a parameter size
        w_1x1 = F.pad(self.weight_1x1, [1, 1, 1, 1])
        w = self.weight_origin * self.vector[0].view(-1, 1, 1, 1) + w_1x1 * self.vector[1].view(
            -1, 1, 1, 1
        )
        return w.view(g, per_group, *w.shape[1:]).reshape(t, *w.shape[1:])

    def forward(self, x):
        return self.bn(F.conv2d(x, self.weight_gen(), None, 1, 1, 1, self.groups))


def test_orepa_style_int_of_parameter_sizes_traces():
    model = prepared(OREPAStyleConv())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    assert not result.report.skipped_scopes
    outputs_agree(model, result.model, x, torch.randn(1, 4, 10, 6, dtype=torch.float64))

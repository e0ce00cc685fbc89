"""DBB-like: kxk, 1x1, 1x1->avg, 1x1->kxk branches; BN-and-pad; in-place accumulation. Written in
its authors' idiom.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


class BNAndPadLayer(nn.Module):
    """BN, then pad with what the BN outputs for 0 (so a later unpadded conv sees the same
    border as if the 1x1 conv input had been zero padded).

    ``use_slice_assign=True`` fills the border by slice assignment like the original DBB code
    (not traceable by ``torch.fx``); otherwise with ``F.pad`` arithmetic.
    """

    def __init__(
        self,
        pad_pixels,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        use_slice_assign=False,
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.pad_pixels = pad_pixels
        self.use_slice_assign = use_slice_assign

    def _pad_values(self):
        if self.bn.affine:
            return self.bn.bias - self.bn.running_mean * self.bn.weight / torch.sqrt(
                self.bn.running_var + self.bn.eps
            )
        return -self.bn.running_mean / torch.sqrt(self.bn.running_var + self.bn.eps)

    def forward(self, input):
        output = self.bn(input)
        if self.pad_pixels <= 0:
            return output
        p = self.pad_pixels
        pad_values = self._pad_values().view(1, -1, 1, 1)
        if not self.use_slice_assign:
            return F.pad(output - pad_values, [p, p, p, p]) + pad_values
        output = F.pad(output, [p] * 4)
        output[:, :, 0:p, :] = pad_values
        output[:, :, -p:, :] = pad_values
        output[:, :, :, 0:p] = pad_values
        output[:, :, :, -p:] = pad_values
        return output


def _conv_bn_dbb(in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1):
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
    )
    bn = nn.BatchNorm2d(out_channels)
    se = nn.Sequential()
    se.add_module("conv", conv)
    se.add_module("bn", bn)
    return se


class DiverseBranchBlock(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        groups=1,
        internal_channels_1x1_3x3=None,
        deploy=False,
        nonlinear=None,
        use_slice_assign=False,
    ):
        super().__init__()
        self.deploy = deploy
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        self.kernel_size = kernel_size
        self.groups = groups
        assert padding == kernel_size // 2
        if deploy:
            self.dbb_reparam = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
            return
        self.dbb_origin = _conv_bn_dbb(
            in_channels, out_channels, kernel_size, stride, padding, groups
        )
        self.dbb_avg = nn.Sequential()
        if groups < out_channels:
            self.dbb_avg.add_module(
                "conv", nn.Conv2d(in_channels, out_channels, 1, 1, 0, groups=groups, bias=False)
            )
            self.dbb_avg.add_module(
                "bn", BNAndPadLayer(padding, out_channels, use_slice_assign=use_slice_assign)
            )
            self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, 0))
            self.dbb_1x1 = _conv_bn_dbb(in_channels, out_channels, 1, stride, 0, groups)
        else:
            self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, padding))
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(out_channels))

        if internal_channels_1x1_3x3 is None:
            internal_channels_1x1_3x3 = in_channels if groups < out_channels else 2 * in_channels
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module(
            "conv1",
            nn.Conv2d(in_channels, internal_channels_1x1_3x3, 1, 1, 0, groups=groups, bias=False),
        )
        self.dbb_1x1_kxk.add_module(
            "bn1",
            BNAndPadLayer(padding, internal_channels_1x1_3x3, use_slice_assign=use_slice_assign),
        )
        self.dbb_1x1_kxk.add_module(
            "conv2",
            nn.Conv2d(
                internal_channels_1x1_3x3,
                out_channels,
                kernel_size,
                stride,
                0,
                groups=groups,
                bias=False,
            ),
        )
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(out_channels))

    def forward(self, inputs):
        if hasattr(self, "dbb_reparam"):
            return self.nonlinear(self.dbb_reparam(inputs))
        out = self.dbb_origin(inputs)
        if hasattr(self, "dbb_1x1"):
            out += self.dbb_1x1(inputs)
        out += self.dbb_avg(inputs)
        out += self.dbb_1x1_kxk(inputs)
        return self.nonlinear(out)


class DBBNet(nn.Module):
    def __init__(self, deploy=False, use_slice_assign=False, num_classes=10):
        super().__init__()
        cfg = [(3, 8, 3, 2, 1), (8, 16, 3, 1, 2), (16, 16, 5, 2, 16), (16, 16, 3, 1, 1)]
        blocks = []
        for cin, cout, k, s, g in cfg:
            blocks.append(
                DiverseBranchBlock(
                    cin,
                    cout,
                    k,
                    s,
                    k // 2,
                    groups=g,
                    deploy=deploy,
                    nonlinear=nn.ReLU(),
                    use_slice_assign=use_slice_assign,
                )
            )
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@zoo_model("dbb", (2, 3, 16, 16))
def make_dbb(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """DBB-like net (BN-and-pad written with ``F.pad``; fx-traceable)."""
    with seeded(seed):
        model = DBBNet()
    return finish(model, seed, dtype)


@zoo_model("dbb_slice_assign", (2, 3, 16, 16))
def make_dbb_slice_assign(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Like :func:`make_dbb`, BN-and-pad filling the border by slice assignment (not
    fx-traceable, as in the original DBB code)."""
    with seeded(seed):
        model = DBBNet(use_slice_assign=True)
    return finish(model, seed, dtype)


@plain_twin("dbb", "dbb_slice_assign")
def make_dbb_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_dbb`."""
    with seeded(seed):
        model = DBBNet(deploy=True)
    return finish(model, seed, dtype)

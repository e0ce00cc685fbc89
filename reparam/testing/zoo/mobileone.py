"""MobileOne-like: k over-parameterized conv-bn branches + 1x1 scale branch + BN skip. Written in
its authors' idiom.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


class MobileOneBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        inference_mode: bool = False,
        num_conv_branches: int = 1,
    ) -> None:
        super().__init__()
        self.inference_mode = inference_mode
        self.groups = groups
        self.stride = stride
        self.kernel_size = kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_conv_branches = num_conv_branches
        self.se = nn.Identity()
        self.activation = nn.ReLU()

        if inference_mode:
            self.reparam_conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
        else:
            self.rbr_skip = (
                nn.BatchNorm2d(num_features=in_channels)
                if out_channels == in_channels and stride == 1
                else None
            )
            rbr_conv = list()
            for _ in range(self.num_conv_branches):
                rbr_conv.append(self._conv_bn(kernel_size=kernel_size, padding=padding))
            self.rbr_conv = nn.ModuleList(rbr_conv)
            self.rbr_scale = None
            if kernel_size > 1:
                self.rbr_scale = self._conv_bn(kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference_mode:
            return self.activation(self.se(self.reparam_conv(x)))
        identity_out = 0
        if self.rbr_skip is not None:
            identity_out = self.rbr_skip(x)
        scale_out = 0
        if self.rbr_scale is not None:
            scale_out = self.rbr_scale(x)
        out = scale_out + identity_out
        for ix in range(self.num_conv_branches):
            out += self.rbr_conv[ix](x)
        return self.activation(self.se(out))

    def _conv_bn(self, kernel_size: int, padding: int) -> nn.Sequential:
        mod_list = nn.Sequential()
        mod_list.add_module(
            "conv",
            nn.Conv2d(
                self.in_channels,
                self.out_channels,
                kernel_size,
                self.stride,
                padding,
                groups=self.groups,
                bias=False,
            ),
        )
        mod_list.add_module("bn", nn.BatchNorm2d(num_features=self.out_channels))
        return mod_list


class MobileOneNet(nn.Module):
    def __init__(self, inference_mode=False, num_classes=10, k=3):
        super().__init__()
        self.stage0 = MobileOneBlock(3, 8, 3, stride=2, padding=1, inference_mode=inference_mode)
        plan = [(8, 8, 1), (8, 16, 2), (16, 16, 1)]
        layers = []
        for cin, cout, stride in plan:
            # depthwise kxk then pointwise 1x1, both over-parameterized k times
            layers.append(
                MobileOneBlock(
                    cin,
                    cin,
                    3,
                    stride=stride,
                    padding=1,
                    groups=cin,
                    inference_mode=inference_mode,
                    num_conv_branches=k,
                )
            )
            layers.append(
                MobileOneBlock(
                    cin,
                    cout,
                    1,
                    stride=1,
                    padding=0,
                    inference_mode=inference_mode,
                    num_conv_branches=k,
                )
            )
        self.stages = nn.Sequential(*layers)
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stage0(x)
        x = self.stages(x)
        x = self.gap(x)
        x = x.view(x.size(0), -1)
        return self.linear(x)


@zoo_model("mobileone", (2, 3, 16, 16))
def make_mobileone(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """MobileOne-like net: depthwise/pointwise blocks with 3 conv branches, scale, BN skip."""
    with seeded(seed):
        model = MobileOneNet()
    return finish(model, seed, dtype)


@plain_twin("mobileone")
def make_mobileone_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_mobileone`."""
    with seeded(seed):
        model = MobileOneNet(inference_mode=True)
    return finish(model, seed, dtype)

"""ACNet-like: square kxk + horizontal 1xk + vertical kx1, each with its own BN attribute. Written
in its authors' idiom.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


class ACBlock(nn.Module):
    """Asymmetric convolution block; BN attributes kept next to their convs."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        padding_mode="zeros",
        deploy=False,
    ):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.fused_conv = nn.Conv2d(
                in_channels,
                out_channels,
                (kernel_size, kernel_size),
                stride,
                padding,
                dilation,
                groups,
                bias=True,
                padding_mode=padding_mode,
            )
            return
        self.square_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, kernel_size),
            stride,
            padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.square_bn = nn.BatchNorm2d(out_channels)
        hor_padding = (0, padding)
        ver_padding = (padding, 0)
        self.ver_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, 1),
            stride,
            ver_padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.hor_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (1, kernel_size),
            stride,
            hor_padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.hor_bn = nn.BatchNorm2d(out_channels)

    def forward(self, input):
        if self.deploy:
            return self.fused_conv(input)
        square_outputs = self.square_conv(input)
        square_outputs = self.square_bn(square_outputs)
        vertical_outputs = self.ver_conv(input)
        vertical_outputs = self.ver_bn(vertical_outputs)
        horizontal_outputs = self.hor_conv(input)
        horizontal_outputs = self.hor_bn(horizontal_outputs)
        return square_outputs + vertical_outputs + horizontal_outputs


class ACNetCifar(nn.Module):
    def __init__(self, deploy=False, num_classes=10):
        super().__init__()
        cfg = [(3, 8, 1, 1), (8, 16, 2, 1), (16, 16, 1, 4), (16, 16, 2, 16)]
        layers = []
        for cin, cout, stride, groups in cfg:
            layers.append(
                ACBlock(cin, cout, 3, stride=stride, padding=1, groups=groups, deploy=deploy)
            )
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.body(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


@zoo_model("acnet", (2, 3, 16, 16))
def make_acnet(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """ACNet-like CNN: 3x3 + 1x3 + 3x1 conv-BN blocks (dense, grouped and depthwise)."""
    with seeded(seed):
        model = ACNetCifar()
    return finish(model, seed, dtype)


@plain_twin("acnet")
def make_acnet_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_acnet`."""
    with seeded(seed):
        model = ACNetCifar(deploy=True)
    return finish(model, seed, dtype)

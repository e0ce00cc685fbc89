"""RepLKNet-like block: pre-BN, 1x1, large depthwise kernel + parallel small kernel, 1x1. Written
in its authors' idiom.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


def get_conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias):
    return nn.Conv2d(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def conv_bn_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation=1):
    if padding is None:
        padding = kernel_size // 2
    result = nn.Sequential()
    result.add_module(
        "conv",
        get_conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        ),
    )
    result.add_module("bn", nn.BatchNorm2d(out_channels))
    return result


def conv_bn_relu_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation=1):
    result = conv_bn_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation)
    result.add_module("nonlinear", nn.ReLU())
    return result


class ReparamLargeKernelConv(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        groups,
        small_kernel,
        small_kernel_merged=False,
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        padding = kernel_size // 2
        if small_kernel_merged:
            self.lkb_reparam = get_conv2d(
                in_channels, out_channels, kernel_size, stride, padding, 1, groups, bias=True
            )
        else:
            self.lkb_origin = conv_bn_lk(
                in_channels, out_channels, kernel_size, stride, padding, groups
            )
            if small_kernel is not None:
                assert small_kernel <= kernel_size
                self.small_conv = conv_bn_lk(
                    in_channels, out_channels, small_kernel, stride, small_kernel // 2, groups
                )

    def forward(self, inputs):
        if hasattr(self, "lkb_reparam"):
            out = self.lkb_reparam(inputs)
        else:
            out = self.lkb_origin(inputs)
            if hasattr(self, "small_conv"):
                out += self.small_conv(inputs)
        return out


class RepLKBlock(nn.Module):
    def __init__(
        self, in_channels, dw_channels, block_lk_size, small_kernel, small_kernel_merged=False
    ):
        super().__init__()
        self.pw1 = conv_bn_relu_lk(in_channels, dw_channels, 1, 1, 0, groups=1)
        self.pw2 = conv_bn_lk(dw_channels, in_channels, 1, 1, 0, groups=1)
        self.large_kernel = ReparamLargeKernelConv(
            dw_channels,
            dw_channels,
            block_lk_size,
            stride=1,
            groups=dw_channels,
            small_kernel=small_kernel,
            small_kernel_merged=small_kernel_merged,
        )
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = nn.BatchNorm2d(in_channels)
        self.drop_path = nn.Identity()

    def forward(self, x):
        out = self.prelkb_bn(x)
        out = self.pw1(out)
        out = self.large_kernel(out)
        out = self.lk_nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKStage(nn.Module):
    def __init__(
        self,
        channels=8,
        num_blocks=2,
        lk_size=13,
        small_kernel=5,
        dw_ratio=2,
        small_kernel_merged=False,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            [
                RepLKBlock(
                    channels,
                    channels * dw_ratio,
                    lk_size,
                    small_kernel,
                    small_kernel_merged=small_kernel_merged,
                )
                for _ in range(num_blocks)
            ]
        )
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        x = self.stem(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


@zoo_model("replknet_block", (2, 3, 16, 16))
def make_replknet_block(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A stem + two RepLKNet-like blocks (13x13 depthwise + parallel 5x5), pre-BN residual."""
    with seeded(seed):
        model = RepLKStage()
    return finish(model, seed, dtype)


@plain_twin("replknet_block")
def make_replknet_block_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_replknet_block` (small kernel merged into the large one).

    The pre-BN stays a separate layer here; an engine may also fold it into ``pw1``."""
    with seeded(seed):
        model = RepLKStage(small_kernel_merged=True)
    return finish(model, seed, dtype)

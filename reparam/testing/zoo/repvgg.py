"""RepVGG-like: rbr_dense (3x3 conv-bn) + rbr_1x1 (1x1 conv-bn) + rbr_identity (BN), then ReLU.
Written in its authors' idiom.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


def conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups=1):
    result = nn.Sequential()
    result.add_module(
        "conv",
        nn.Conv2d(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        ),
    )
    result.add_module("bn", nn.BatchNorm2d(num_features=out_channels))
    return result


class RepVGGBlock(nn.Module):
    def __init__(
        self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, groups=1, deploy=False
    ):
        super().__init__()
        self.deploy = deploy
        self.groups = groups
        self.in_channels = in_channels
        assert kernel_size == 3
        assert padding == 1
        padding_11 = padding - kernel_size // 2
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
        else:
            self.rbr_identity = (
                nn.BatchNorm2d(num_features=in_channels)
                if out_channels == in_channels and stride == 1
                else None
            )
            self.rbr_dense = conv_bn(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups
            )
            self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, padding_11, groups=groups)

    def forward(self, inputs):
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.rbr_reparam(inputs))
        if self.rbr_identity is None:
            id_out = 0
        else:
            id_out = self.rbr_identity(inputs)
        return self.nonlinearity(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + id_out)


class RepVGG(nn.Module):
    def __init__(
        self,
        num_blocks=(1, 2, 2, 1),
        num_classes=10,
        width=(8, 16, 16, 32),
        override_groups_map=None,
        deploy=False,
    ):
        super().__init__()
        self.deploy = deploy
        self.override_groups_map = override_groups_map or {}
        self.in_planes = min(8, width[0])
        self.stage0 = RepVGGBlock(3, self.in_planes, 3, stride=2, padding=1, deploy=deploy)
        self.cur_layer_idx = 1
        self.stage1 = self._make_stage(width[0], num_blocks[0], stride=1)
        self.stage2 = self._make_stage(width[1], num_blocks[1], stride=2)
        self.stage3 = self._make_stage(width[2], num_blocks[2], stride=2)
        self.stage4 = self._make_stage(width[3], num_blocks[3], stride=2)
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(width[3], num_classes)

    def _make_stage(self, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        blocks = []
        for stride in strides:
            cur_groups = self.override_groups_map.get(self.cur_layer_idx, 1)
            blocks.append(
                RepVGGBlock(
                    self.in_planes,
                    planes,
                    3,
                    stride=stride,
                    padding=1,
                    groups=cur_groups,
                    deploy=self.deploy,
                )
            )
            self.in_planes = planes
            self.cur_layer_idx += 1
        return nn.Sequential(*blocks)

    def forward_features(self, x):
        out = self.stage0(x)
        out = self.stage1(out)
        out = self.stage2(out)
        out = self.stage3(out)
        out = self.stage4(out)
        return out

    def forward(self, x):
        out = self.forward_features(x)
        out = self.gap(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)


_REPVGG_GROUPS = {2: 2, 4: 2, 6: 4}


@zoo_model("repvgg", (2, 3, 32, 32))
def make_repvgg(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """RepVGG-like net: stem + 4 stages of 3x3/1x1/BN-identity blocks, some grouped."""
    with seeded(seed):
        model = RepVGG(override_groups_map=_REPVGG_GROUPS)
    return finish(model, seed, dtype)


@plain_twin("repvgg")
def make_repvgg_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The deploy form of :func:`make_repvgg`: one biased 3x3 conv + ReLU per block."""
    with seeded(seed):
        model = RepVGG(override_groups_map=_REPVGG_GROUPS, deploy=True)
    return finish(model, seed, dtype)

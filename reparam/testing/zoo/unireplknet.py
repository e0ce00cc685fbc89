"""UniRepLKNet-like dilated re-param block: large depthwise + dilated small depthwise branches.
Written in its authors' idiom.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.zoo.registry import finish, plain_twin, zoo_model


class DilatedReparamBlock(nn.Module):
    """Branches are attributes named by kernel size and dilation, fetched with getattr."""

    def __init__(self, channels, kernel_size, deploy=False):
        super().__init__()
        self.lk_origin = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            stride=1,
            padding=kernel_size // 2,
            dilation=1,
            groups=channels,
            bias=deploy,
        )
        if kernel_size == 7:
            self.kernel_sizes = [5, 3, 3]
            self.dilates = [1, 2, 3]
        elif kernel_size == 9:
            self.kernel_sizes = [5, 5, 3, 3]
            self.dilates = [1, 2, 3, 4]
        else:
            raise ValueError("this toy only knows kernel sizes 7 and 9")
        self.deploy = deploy
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
                self.__setattr__(
                    f"dil_conv_k{k}_{r}",
                    nn.Conv2d(
                        channels,
                        channels,
                        k,
                        stride=1,
                        padding=(r * (k - 1) + 1) // 2,
                        dilation=r,
                        groups=channels,
                        bias=False,
                    ),
                )
                self.__setattr__(f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def forward(self, x):
        if self.deploy:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            conv = self.__getattr__(f"dil_conv_k{k}_{r}")
            bn = self.__getattr__(f"dil_bn_k{k}_{r}")
            out = out + bn(conv(x))
        return out


class UniRepLKBlock(nn.Module):
    def __init__(self, dim, kernel_size=9, deploy=False, ffn_factor=2):
        super().__init__()
        self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy)
        self.norm = nn.Identity() if deploy else nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, ffn_factor * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(ffn_factor * dim, dim)
        self.gamma = nn.Parameter(0.5 * torch.ones(dim))

    def forward(self, inputs):
        y = self.norm(self.dwconv(inputs))
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        y = y * self.gamma
        return inputs + y.permute(0, 3, 1, 2)


@zoo_model("unireplknet_block", (2, 8, 12, 12))
def make_unireplknet_block(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Two UniRepLKNet-like blocks (9x9 depthwise + dilated 5/5/3/3 branches, then a BN)."""
    with seeded(seed):
        model = nn.Sequential(UniRepLKBlock(8, 9), UniRepLKBlock(8, 7))
    return finish(model, seed, dtype)


@plain_twin("unireplknet_block")
def make_unireplknet_block_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_unireplknet_block` (one biased depthwise conv, no BN)."""
    with seeded(seed):
        model = nn.Sequential(UniRepLKBlock(8, 9, deploy=True), UniRepLKBlock(8, 7, deploy=True))
    return finish(model, seed, dtype)

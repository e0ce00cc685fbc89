"""The built-in demo: a small training-time network mixing the classic multi-branch blocks.

Used by ``reparam deploy`` with no model argument, and by the tests.
"""

from __future__ import annotations

import torch
from torch import nn

from reparam.testing._common import randomize_norms


def _conv_bn(
    cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, groups: int = 1
) -> nn.Sequential:
    pad = (k // 2) if isinstance(k, int) else (k[0] // 2, k[1] // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class RepVGGStyleBlock(nn.Module):
    """3×3 conv-BN + 1×1 conv-BN + BN identity (RepVGG, arXiv:2101.03697)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dense = _conv_bn(channels, channels, 3)
        self.pointwise = _conv_bn(channels, channels, 1)
        self.identity = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x) + self.pointwise(x) + self.identity(x))


class ACBlock(nn.Module):
    """k×k + 1×k + k×1 conv-BN branches (ACNet, arXiv:1908.03930)."""

    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        self.square = _conv_bn(channels, channels, k)
        self.hor = _conv_bn(channels, channels, (1, k))
        self.ver = _conv_bn(channels, channels, (k, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.square(x)
        out += self.hor(x)
        out += self.ver(x)
        return torch.relu(out)


class MobileOneStyleBlock(nn.Module):
    """k over-parameterized depthwise 3×3 branches + 1×1 scale branch + BN identity
    (MobileOne, arXiv:2206.04040)."""

    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            _conv_bn(channels, channels, 3, groups=channels) for _ in range(k)
        )
        self.scale = _conv_bn(channels, channels, 1, groups=channels)
        self.skip = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches] + [self.scale(x), self.skip(x)]
        return nn.functional.relu(sum(outs))


class DemoNet(nn.Module):
    """Stem, RepVGG / ACNet / MobileOne-style blocks and a BN → pool → Linear head."""

    def __init__(self, channels: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.stages = nn.Sequential(
            RepVGGStyleBlock(channels),
            ACBlock(channels),
            MobileOneStyleBlock(channels),
            RepVGGStyleBlock(channels),
        )
        self.head_norm = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_norm(self.forward_features(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm non-trivial statistics and affine parameters, as after training: an
    alias of :func:`reparam.testing.randomize_norms` seeded with ``seed``."""
    return randomize_norms(model, seed)


def demo_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The demo network (eval mode, trained-looking norms) and an example input."""
    torch.manual_seed(seed)
    model = randomize_batch_norms(DemoNet(), seed).eval()
    return model, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))

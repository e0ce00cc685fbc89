"""Home-page example: deploy a RepVGG-style block and check the result."""

# --8<-- [start:example]
import torch
from torch import nn

import reparam


class RepVGGBlock(nn.Module):  # 3x3 conv-BN + 1x1 conv-BN + BN identity, summed
    def __init__(self, c: int) -> None:
        super().__init__()
        self.k3 = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        )
        self.k1 = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        )
        self.skip = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.k3(x) + self.k1(x) + self.skip(x))


model, x = RepVGGBlock(8).eval(), torch.randn(1, 8, 16, 16)
deployed = reparam.deploy(model, x)  # an equivalent model with one 3x3 conv
print(deployed)
print("relative error:", reparam.assert_equivalent(model, deployed, x))
# --8<-- [end:example]

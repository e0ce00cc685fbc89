"""Tutorial: deploy your own model and read what reparam did.

Run it with ``python docs/examples/deploy_any_model.py`` (a few seconds on a
CPU).
"""

# --8<-- [start:model]
import torch
import torch.nn.functional as F
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms


def conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    pad = dilation * (k // 2)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


class RepBlock(nn.Module):
    """3x3 and 1x1 conv-BN, a 3x3 average pool and a BN identity, summed."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.k3, self.k1 = conv_bn(c, c, 3), conv_bn(c, c, 1)
        # count_include_pad=True: the pool is a conv kernel
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.skip = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.k3(x) + self.k1(x) + self.pool(x) + self.skip(x))


class PointwiseThenSpatial(nn.Module):
    """1x1 conv -> BN -> zero-padded 3x3 conv: the shift meets the border."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = conv_bn(c, 2 * c, 1)
        self.spatial = nn.Conv2d(2 * c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.spatial(self.expand(x)))


class DilatedBlock(nn.Module):
    """A dilated 3x3 (dilation 3) beside a dense 3x3: merged, a dense 7x7."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dilated, self.dense = (
            conv_bn(c, c, 3, dilation=3),
            conv_bn(c, c, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.dilated(x) + self.dense(x))


class TinyNet(nn.Module):
    def __init__(self, c: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, c, 3, stride=2), nn.ReLU())
        self.blocks = nn.Sequential(
            RepBlock(c), PointwiseThenSpatial(c), DilatedBlock(c)
        )
        self.head_norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_norm(self.forward_features(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


torch.manual_seed(0)
# norms with trained-looking statistics
model = randomize_batch_norms(TinyNet()).eval()
x = torch.randn(2, 3, 32, 32)
# --8<-- [end:model]

# --8<-- [start:deploy]
result = reparam.deploy_with_report(model, x)
deployed, report = result.model, result.report
print(report)  # a summary per rule: what `reparam deploy` prints
print(report.render(full=True))  # every site (`reparam deploy --full`)
# --8<-- [end:deploy]

# --8<-- [start:inspect]
print(report.fired())  # rule name -> how many times it fired
# Every site a rule looked at and left alone. A site can be seen again from
# an enclosing scope, so collect the refusals by (rule, site).
refused = {(r.rule, r.site): r.reason for r in report.refusals}
for (rule, site), reason in refused.items():
    print(f"{rule} at {site}: {reason}")

# The deployed model keeps its classes, its methods and its submodule paths.
assert isinstance(deployed, TinyNet) and isinstance(
    deployed.blocks[0], RepBlock
)
print(deployed.blocks[0])  # the four branches are now one 3x3 conv
features = deployed.forward_features(x)  # other methods still work
print("max relative error:", reparam.assert_equivalent(model, deployed, x))
# --8<-- [end:inspect]

# --8<-- [start:explain]
explanation = reparam.explain(model, x)
for reason in {o.reason for o in explanation.why_not("blocks.2")}:
    print("blocks.2 was left alone:", reason)

# Merging the dilated block is exact, only slower: ask for it explicitly.
faster_or_not = reparam.deploy(model, x, allow_slower=True)
print(faster_or_not.blocks[2])
# --8<-- [end:explain]

# --8<-- [start:json]
import json

summary = report.to_dict()
keys = ("fired", "params_before", "params_after")
print(json.dumps({k: summary[k] for k in keys}, indent=2))
# --8<-- [end:json]

"""Tutorial: RepMLPNet as the backbone of a (tiny) semantic segmentation model.

The backbone is a narrow RepMLPNet with the T224 layout, designed for 32x32
inputs and run on 64x64 images (a multiple of the design resolution: each stage
map then holds 2x2 partitions). Swap in ``create_model("repmlpnet_t224",
features_only=True)`` and 448x448 inputs for the real thing.
"""

# --8<-- [start:backbone]
import torch
import torch.nn.functional as F
from torch import nn

import reparam
import reparam_models
from reparam.demo import randomize_batch_norms

TINY_T224 = dict(
    channels=(16, 32, 64, 128),
    num_blocks=(1, 1, 1, 1),
    num_sharesets=(1, 2, 4, 8),
    hs=(8, 4, 2, 1),
    img_size=32,
)

backbone = reparam_models.create_model(
    "repmlpnet_t224", features_only=True, **TINY_T224
)
print("channels :", backbone.feature_info.channels())
print("strides  :", backbone.feature_info.reduction())

image = torch.randn(2, 3, 64, 64)  # 2 x the design resolution
with torch.no_grad():
    for feat, stride in zip(
        backbone(image), backbone.feature_info.reduction(), strict=True
    ):
        print(f"stride {stride:>2}: {tuple(feat.shape)}")
# --8<-- [end:backbone]


# --8<-- [start:head]
def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class FPNLiteHead(nn.Module):
    """Every stage to ``width`` channels, up to stride 4, summed, classified."""

    def __init__(
        self, in_channels: list[int], width: int = 32, num_classes: int = 5
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            conv_bn_relu(c, width, 1) for c in in_channels
        )
        self.fuse = conv_bn_relu(width, width, 3)
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        fused = self.lateral[0](feats[0])
        for lateral, feat in zip(self.lateral[1:], feats[1:], strict=True):
            fused = fused + F.interpolate(
                lateral(feat), size=size, mode="bilinear"
            )
        return self.classify(self.fuse(fused))


class Segmenter(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int = 5) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = FPNLiteHead(
            backbone.feature_info.channels(), num_classes=num_classes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))  # stride 4
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear")


torch.manual_seed(0)
model = randomize_batch_norms(Segmenter(backbone)).eval()
with torch.no_grad():
    print("logits   :", tuple(model(image).shape))  # (N, classes, H, W)
# --8<-- [end:head]

# --8<-- [start:deploy]
result = reparam.deploy_with_report(model, image)
print(result.report.fired())
seg = result.model
print(
    "backbone still a RepMLPNet:",
    isinstance(seg.backbone, reparam_models.RepMLPNet),
)
print("relative error:", reparam.assert_equivalent(model, seg, image))

# The deployed backbone alone still serves as a feature extractor.
with torch.no_grad():
    maps = seg.backbone.forward_features(image)
print([tuple(m.shape) for m in maps])
# --8<-- [end:deploy]

"""RepMLP-ResNet: ResNet-50 with RepMLP blocks in c3 and c4 (RepMLP v1), and the plain baseline.

Paper: Xiaohan Ding, Chunlong Xia, Xiangyu Zhang, Xiaojie Chu, Jungong Han, Guiguang Ding,
"RepMLP: Re-parameterizing Convolutions into Fully-connected Layers for Image Recognition",
arXiv:2105.01883.

ResNet-50 layout (stem 7x7/2 + max-pool, stage widths 256/512/1024/2048, depths 3/4/6/3, stride
on the 3x3 conv). In the RepMLP variants the stride-1 blocks of c3 and c4 (stride 8 and 16)
become RepMLP Light or RepMLP Bottleneck blocks; the first block of every stage stays a plain
bottleneck. The v1 RepMLP block is built for a fixed feature-map size, so these models take
exactly ``img_size`` x ``img_size`` inputs.

Training-time models only; deploy with ``reparam.deploy`` or build ``inference=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import ConvBN, FeatureInfo, RepMLPStageConfig, make_resnet_stage
from .registry import register_model

__all__ = ["RepMLPResNet"]

_PAPER = "RepMLP: Re-parameterizing Convolutions into Fully-connected Layers for Image Recognition"
_ARXIV = "2105.01883"


class RepMLPResNet(nn.Module):
    """ResNet-50-style network, optionally with RepMLP blocks.

    Args:
        block_type: ``"base"`` (plain ResNet), ``"light"`` or ``"bottleneck"``.
        num_blocks: blocks per stage (c2..c5).
        channels: output widths of the four stages.
        img_size: the (square) input resolution the RepMLP blocks are built for.
        h, w: partition size of the RepMLP blocks (``w`` defaults to ``h``).
        reparam_conv_k: Local Perceptron kernel sizes.
        fc1_fc2_reduction: Global Perceptron reduction.
        fc3_groups: groups ``g`` of fc3 / the local convs, one value or one per RepMLP stage.
        bottleneck_r: RepMLP Bottleneck channel reduction ``r`` per RepMLP stage.
        repmlp_stages: indices (0 = c2) of the stages whose stride-1 blocks become RepMLP.
        num_classes: classifier outputs (0: the pooled features are returned).
        features_only: no head; ``forward`` returns the four stage maps.
        inference: build the inference (deployed) form.
    """

    def __init__(
        self,
        block_type: str = "base",
        num_blocks: Sequence[int] = (3, 4, 6, 3),
        channels: Sequence[int] = (256, 512, 1024, 2048),
        img_size: int = 224,
        h: int = 7,
        w: int | None = None,
        reparam_conv_k: Sequence[int] = (1, 3, 5),
        fc1_fc2_reduction: int = 1,
        fc3_groups: int | Sequence[int] = 4,
        bottleneck_r: Sequence[int] = (2, 4),
        repmlp_stages: Sequence[int] = (1, 2),
        in_chans: int = 3,
        num_classes: int = 1000,
        stem_channels: int = 64,
        features_only: bool = False,
        inference: bool = False,
    ) -> None:
        super().__init__()
        if block_type not in ("base", "light", "bottleneck"):
            raise ValueError(f"RepMLPResNet: block_type must be 'base', 'light' or "
                             f"'bottleneck', got {block_type!r}")
        w = h if w is None else w
        groups = (
            (fc3_groups,) * len(repmlp_stages) if isinstance(fc3_groups, int)
            else tuple(fc3_groups)
        )
        if len(groups) != len(repmlp_stages) or len(bottleneck_r) < len(repmlp_stages):
            raise ValueError("RepMLPResNet: give fc3_groups / bottleneck_r per RepMLP stage")
        self.block_type = block_type
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = int(channels[-1])
        self.features_only = features_only
        self.inference = inference

        self.stem = ConvBN(in_chans, stem_channels, 7, stride=2, padding=3, act=nn.ReLU(),
                           inference=inference)
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        info = FeatureInfo()
        in_ch = stem_channels
        reduction = 4
        for i, (depth, out_ch) in enumerate(zip(num_blocks, channels, strict=True)):
            stride = 1 if i == 0 else 2
            reduction = reduction * stride
            cfg = None
            if block_type != "base" and i in repmlp_stages:
                j = list(repmlp_stages).index(i)
                size = img_size // reduction
                cfg = RepMLPStageConfig(
                    block_type=block_type, H=size, W=size, h=h, w=w,
                    reparam_conv_k=tuple(reparam_conv_k), fc1_fc2_reduction=fc1_fc2_reduction,
                    fc3_groups=groups[j], r=bottleneck_r[j],
                )
            stages.append(make_resnet_stage(in_ch, out_ch, out_ch // 4, depth, stride,
                                            repmlp=cfg, inference=inference,
                                            name=f"stages.{i}"))
            info.append({"num_chs": int(out_ch), "reduction": reduction, "module": f"stages.{i}"})
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.feature_info = info
        if not features_only:
            self.head: nn.Module = (
                nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()
            )
        self.pretrained_cfg: dict[str, Any] = {
            "input_size": (in_chans, img_size, img_size),
            "num_classes": num_classes,
            "paper": _PAPER,
            "arxiv": _ARXIV,
            "fixed_input_size": block_type != "base",
        }

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage maps (c2..c5, strides 4/8/16/32)."""
        x = self.stem_pool(self.stem(x))
        feats: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool -> Linear on the last stage map."""
        if self.features_only:
            raise RuntimeError("RepMLPResNet was built with features_only=True: it has no head")
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        feats = self.forward_features(x)
        if self.features_only:
            return feats
        return self.forward_head(feats[-1])


def _build(inference: bool, defaults: dict[str, Any], kwargs: dict[str, Any]) -> RepMLPResNet:
    return RepMLPResNet(inference=inference, **{**defaults, **kwargs})


@register_model
def resnet50(*, inference: bool = False, **kwargs: Any) -> RepMLPResNet:
    """Plain ResNet-50 baseline (25.53M params, 4.09G MACs)."""
    return _build(inference, dict(block_type="base"), kwargs)


@register_model
def repmlp_res50_light_224(*, inference: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Light-224: h=w=7, K=(1,3,5), g=4 (87.04M params, 3.30G MACs train)."""
    return _build(inference, dict(block_type="light", img_size=224, h=7,
                                  reparam_conv_k=(1, 3, 5), fc3_groups=4), kwargs)


@register_model
def repmlp_res50_bottleneck_224(*, inference: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-224: h=w=7, K=(1,3,5), g=8, r=2/4 (41.07M params, 3.95G MACs)."""
    return _build(inference, dict(block_type="bottleneck", img_size=224, h=7,
                                  reparam_conv_k=(1, 3, 5), fc3_groups=8,
                                  bottleneck_r=(2, 4)), kwargs)


@register_model
def repmlp_res50_bottleneck_320_g8_16(*, inference: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-320: h=w=10, K=(1,3,5,7), g=8 in c3 / 16 in c4 (not released)."""
    return _build(inference, dict(block_type="bottleneck", img_size=320, h=10,
                                  reparam_conv_k=(1, 3, 5, 7), fc3_groups=(8, 16),
                                  bottleneck_r=(2, 4)), kwargs)


@register_model
def repmlp_res50_bottleneck_320_g4_8(*, inference: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-320: h=w=10, K=(1,3,5,7), g=4 in c3 / 8 in c4 (not released)."""
    return _build(inference, dict(block_type="bottleneck", img_size=320, h=10,
                                  reparam_conv_k=(1, 3, 5, 7), fc3_groups=(4, 8),
                                  bottleneck_r=(2, 4)), kwargs)

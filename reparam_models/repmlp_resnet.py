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

from torch import Tensor, nn

from ._builder import build_model_with_cfg
from .checkpoint import KeyMap, fold_norms, layer_folds
from .layers import ConvBN, FeatureInfo, RepMLPStageConfig, make_resnet_stage
from .model_api import ZooModel, check_global_pool, normalize_out_indices, pool_and_flatten
from .registry import register_model, register_pretrained_cfgs

__all__ = ["REFERENCE_KEYS", "RepMLPResNet", "checkpoint_filter_fn"]

_PAPER = "RepMLP: Re-parameterizing Convolutions into Fully-connected Layers for Image Recognition"
_ARXIV = "2105.01883"
_ORIGIN = "https://github.com/DingXiaoH/RepMLP"


class RepMLPResNet(ZooModel, nn.Module):
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
        global_pool: ``"avg"`` (the paper's), ``"max"`` or ``""`` (no pooling; only with
            ``num_classes=0``).
        features_only: no head; ``forward`` returns the stage maps of ``out_indices`` (the
            stages after the last one are not built).
        out_indices: the stages ``features_only`` returns (timm's convention; default all).
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
        global_pool: str = "avg",
        stem_channels: int = 64,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
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
        self.global_pool = check_global_pool(global_pool, num_classes, "RepMLPResNet")
        self.out_indices = (
            normalize_out_indices(out_indices, len(num_blocks)) if features_only else None
        )
        built = self.out_indices[-1] + 1 if self.out_indices else len(num_blocks)

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
        self.stages = nn.Sequential(*stages[:built])
        self.feature_info = FeatureInfo(info, self.out_indices)
        if not features_only:
            self.head: nn.Module = (
                nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()
            )
        self.pretrained_cfg: dict[str, Any] = _cfg(
            input_size=(in_chans, img_size, img_size),
            pool_size=(img_size // 32, img_size // 32),
            num_classes=num_classes,
            paper=_PAPER,
            arxiv=_ARXIV,
            fixed_input_size=block_type != "base",
        )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The stage maps (c2..c5, strides 4/8/16/32; up to the last ``out_indices`` in a
        ``features_only`` model)."""
        x = self.stem_pool(self.stem(x))
        feats: list[Tensor] = []
        for stage in self.stages:
            x = self._run_sequential(stage, x)
            feats.append(x)
        return feats

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global pool -> Linear on the last stage map."""
        if self.features_only:
            raise RuntimeError("RepMLPResNet was built with features_only=True: it has no head")
        x = pool_and_flatten(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        feats = self.forward_features(x)
        if self.out_indices is not None:
            return [feats[i] for i in self.out_indices]
        return self.forward_head(feats[-1])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``Linear(num_features, num_classes)`` head (``Identity`` for 0), optionally
        with another ``global_pool``."""
        if self.features_only:
            raise RuntimeError("RepMLPResNet was built with features_only=True: it has no head")
        pool = self.global_pool if global_pool is None else global_pool
        self.global_pool = check_global_pool(pool, num_classes, "RepMLPResNet")
        like = next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
            if num_classes > 0 else nn.Identity()
        )
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """The pretrained configuration of a RepMLP-ResNet variant (ImageNet evaluation: resize to
    size/0.875, bicubic, centre crop, ImageNet mean/std)."""
    return {
        "num_classes": 1000,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "first_conv": "stem.conv",
        "classifier": "head",
        "license": "mit",
        "paper_ids": f"arXiv:{_ARXIV}",
        "paper_name": _PAPER,
        **kwargs,
    }


_ARGS: dict[str, dict[str, Any]] = {
    "resnet50": dict(block_type="base"),
    "repmlp_res50_light_224": dict(block_type="light", img_size=224, h=7,
                                   reparam_conv_k=(1, 3, 5), fc3_groups=4),
    "repmlp_res50_bottleneck_224": dict(block_type="bottleneck", img_size=224, h=7,
                                        reparam_conv_k=(1, 3, 5), fc3_groups=8,
                                        bottleneck_r=(2, 4)),
    "repmlp_res50_bottleneck_320_g8_16": dict(block_type="bottleneck", img_size=320, h=10,
                                              reparam_conv_k=(1, 3, 5, 7), fc3_groups=(8, 16),
                                              bottleneck_r=(2, 4)),
    "repmlp_res50_bottleneck_320_g4_8": dict(block_type="bottleneck", img_size=320, h=10,
                                             reparam_conv_k=(1, 3, 5, 7), fc3_groups=(4, 8),
                                             bottleneck_r=(2, 4)),
}
_RELEASED = ("repmlp_res50_light_224", "repmlp_res50_bottleneck_224")

default_cfgs: dict[str, dict[str, Any]] = {
    name: _cfg(
        input_size=(3, args.get("img_size", 224), args.get("img_size", 224)),
        pool_size=(args.get("img_size", 224) // 32,) * 2,
        fixed_input_size=args["block_type"] != "base",
        origin_url=_ORIGIN if name in _RELEASED else None,
    )
    for name, args in _ARGS.items()
}
register_pretrained_cfgs(default_cfgs)


# Reference (github.com/DingXiaoH/RepMLP, repmlp_resnet.py) keys -> ours.
REFERENCE_KEYS = KeyMap(
    ours=(
        (r"^stage0\.0\.", "stem."),
        (r"^stage([1-9])\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
        (r"^linear\.", "head."),
    ),
    reference=(
        (r"^stem\.", "stage0.0."),
        (r"^stages\.(\d+)\.", lambda m: f"stage{int(m.group(1)) + 1}."),
        (r"^head\.", "linear."),
    ),
)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A reference or own RepMLP-ResNet checkpoint in ``model``'s key layout: keys renamed
    (:data:`REFERENCE_KEYS`) and, for an inference-form model, the norms a deployed checkpoint
    may keep (conv+BN units, the pooled ``avg.bn``) folded in."""
    return fold_norms(REFERENCE_KEYS.to_ours(state_dict), layer_folds(model))


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    return build_model_with_cfg(RepMLPResNet, variant, pretrained, model_args=_ARGS[variant],
                                pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def resnet50(pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    """Plain ResNet-50 baseline (25.53M params, 4.09G MACs)."""
    return _create("resnet50", pretrained, **kwargs)


@register_model
def repmlp_res50_light_224(pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Light-224: h=w=7, K=(1,3,5), g=4 (87.04M params, 3.30G MACs train)."""
    return _create("repmlp_res50_light_224", pretrained, **kwargs)


@register_model
def repmlp_res50_bottleneck_224(pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-224: h=w=7, K=(1,3,5), g=8, r=2/4 (41.07M params, 3.95G MACs)."""
    return _create("repmlp_res50_bottleneck_224", pretrained, **kwargs)


@register_model
def repmlp_res50_bottleneck_320_g8_16(pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-320: h=w=10, K=(1,3,5,7), g=8 in c3 / 16 in c4 (not released)."""
    return _create("repmlp_res50_bottleneck_320_g8_16", pretrained, **kwargs)


@register_model
def repmlp_res50_bottleneck_320_g4_8(pretrained: bool = False, **kwargs: Any) -> RepMLPResNet:
    """RepMLP-Res50 Bottleneck-320: h=w=10, K=(1,3,5,7), g=4 in c3 / 8 in c4 (not released)."""
    return _create("repmlp_res50_bottleneck_320_g4_8", pretrained, **kwargs)

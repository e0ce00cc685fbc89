"""RepMLPNet: hierarchical vision MLP with re-parameterized locality (RepMLP v2).

Paper: Xiaohan Ding, Honghao Chen, Xiangyu Zhang, Jungong Han, Guiguang Ding, "RepMLPNet:
Hierarchical Vision MLP with Re-parameterized Locality", CVPR 2022, arXiv:2112.11081.

Layout: stem conv(3->C0, k4, s4)+BN+ReLU; four stages of :class:`~reparam_models.layers.
RepMLPNetUnit`; between stages conv(k2, s2)+BN+ReLU (``embeds``); head BN -> global average
pool -> Linear. These are the training-time models; deploy them with the generic engine
(``reparam.deploy``), or build the inference form directly with ``inference=True``: the layout
the engine produces (every conv+BN folded, each RepMLP block reduced to ``fc3`` with a bias,
``prebn2`` folded into the FFN's first conv, ``head_norm`` folded into ``head``).

RepMLPNet is also a dense-prediction backbone: :meth:`RepMLPNet.forward_features` returns the four
stage maps (strides 4, 8, 16, 32) and ``create_model(name, features_only=True)`` builds the
backbone without the classification head. The input resolution must be a multiple of the design
resolution (224 or 256); at a multiple each stage map holds several h x w partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import ConvBN, FeatureInfo, RepMLPNetUnit
from .registry import register_model

__all__ = ["RepMLPNet"]

_PAPER = "RepMLPNet: Hierarchical Vision MLP with Re-parameterized Locality"
_ARXIV = "2112.11081"


class RepMLPNet(nn.Module):
    """RepMLPNet classifier / backbone.

    Args:
        channels: widths of the four stages.
        num_blocks: units per stage.
        hs, ws: partition height/width per stage (the stage's map size at the design resolution).
        num_sharesets: share sets S per stage (channel c uses share set c mod S).
        reparam_conv_k: kernel sizes of the Local Perceptron branches.
        globalperceptron_reduce: reduction of the Global Perceptron's hidden layer.
        ffn_expand: FFN expansion ratio.
        in_chans: input image channels.
        num_classes: classifier outputs (0: no Linear, the pooled features are returned).
        patch_size: stem conv kernel and stride.
        img_size: design resolution (metadata, used by ``pretrained_cfg``).
        features_only: build without the head; ``forward`` returns the four stage maps.
        inference: build the inference (deployed) form.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        num_blocks: Sequence[int] = (2, 2, 6, 2),
        hs: Sequence[int] = (56, 28, 14, 7),
        ws: Sequence[int] | None = None,
        num_sharesets: Sequence[int] = (1, 4, 16, 128),
        reparam_conv_k: Sequence[int] = (1, 3),
        globalperceptron_reduce: int = 4,
        ffn_expand: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        patch_size: int = 4,
        img_size: int = 224,
        features_only: bool = False,
        inference: bool = False,
    ) -> None:
        super().__init__()
        ws = hs if ws is None else ws
        n = len(channels)
        if not (len(num_blocks) == len(hs) == len(ws) == len(num_sharesets) == n):
            raise ValueError("RepMLPNet: channels, num_blocks, hs, ws and num_sharesets must "
                             "have one entry per stage")
        self.num_stages = n
        self.num_classes = num_classes
        self.num_features = int(channels[-1])
        self.features_only = features_only
        self.inference = inference
        self.stem = ConvBN(in_chans, channels[0], patch_size, stride=patch_size, padding=0,
                           act=nn.ReLU(), inference=inference)
        stages: list[nn.Module] = []
        embeds: list[nn.Module] = []
        info = FeatureInfo()
        reduction = patch_size
        for i in range(n):
            stages.append(nn.ModuleList([
                RepMLPNetUnit(
                    channels[i], hs[i], ws[i], num_sharesets=num_sharesets[i],
                    reparam_conv_k=reparam_conv_k,
                    globalperceptron_reduce=globalperceptron_reduce, ffn_expand=ffn_expand,
                    inference=inference, name=f"stages.{i}.{j}",
                )
                for j in range(num_blocks[i])
            ]))
            info.append({"num_chs": int(channels[i]), "reduction": reduction,
                         "module": f"stages.{i}"})
            if i < n - 1:
                embeds.append(ConvBN(channels[i], channels[i + 1], 2, stride=2, padding=0,
                                     act=nn.ReLU(), inference=inference))
                reduction *= 2
        self.stages = nn.ModuleList(stages)
        self.embeds = nn.ModuleList(embeds)
        self.feature_info = info
        if not features_only:
            # Inference form: with a Linear head the norm is folded into it (through the global
            # pool, exact) and becomes an Identity; without one (num_classes=0) it stays.
            fold_head_norm = inference and num_classes > 0
            self.head_norm: nn.Module = (
                nn.Identity() if fold_head_norm else nn.BatchNorm2d(channels[-1])
            )
            self.head: nn.Module = (
                nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()
            )
        self.pretrained_cfg: dict[str, Any] = {
            "input_size": (in_chans, img_size, img_size),
            "num_classes": num_classes,
            "paper": _PAPER,
            "arxiv": _ARXIV,
        }

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage maps, strides 4/8/16/32 (channels ``feature_info.channels()``)."""
        x = self.stem(x)
        feats: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            for unit in stage:
                x = unit(x)
            feats.append(x)
            if i < self.num_stages - 1:
                x = self.embeds[i](x)
        return feats

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Classify the last stage map: BN -> global average pool -> Linear.

        In the inference form (and in a deployed model) the BN is folded into the Linear, so
        ``pre_logits=True`` returns the pooled features *without* the BN's affine there; the
        logits are the same.
        """
        if self.features_only:
            raise RuntimeError("RepMLPNet was built with features_only=True: it has no head")
        # getattr: reparam.deploy deletes a norm it folded away (here, into `head`).
        norm = getattr(self, "head_norm", None)
        if norm is not None:
            x = norm(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        feats = self.forward_features(x)
        if self.features_only:
            return feats
        return self.forward_head(feats[-1])


_CFGS: dict[str, dict[str, Any]] = {
    "repmlpnet_t224": dict(channels=(64, 128, 256, 512), num_blocks=(2, 2, 6, 2),
                           hs=(56, 28, 14, 7), num_sharesets=(1, 4, 16, 128), img_size=224),
    "repmlpnet_t256": dict(channels=(64, 128, 256, 512), num_blocks=(2, 2, 6, 2),
                           hs=(64, 32, 16, 8), num_sharesets=(1, 4, 16, 128), img_size=256),
    "repmlpnet_b224": dict(channels=(96, 192, 384, 768), num_blocks=(2, 2, 12, 2),
                           hs=(56, 28, 14, 7), num_sharesets=(1, 4, 32, 128), img_size=224),
    "repmlpnet_b256": dict(channels=(96, 192, 384, 768), num_blocks=(2, 2, 12, 2),
                           hs=(64, 32, 16, 8), num_sharesets=(1, 4, 32, 128), img_size=256),
    "repmlpnet_d256": dict(channels=(80, 160, 320, 640), num_blocks=(2, 2, 18, 2),
                           hs=(64, 32, 16, 8), num_sharesets=(1, 4, 16, 128), img_size=256),
    "repmlpnet_l256": dict(channels=(96, 192, 384, 768), num_blocks=(2, 2, 18, 2),
                           hs=(64, 32, 16, 8), num_sharesets=(1, 4, 32, 256), img_size=256),
    # Not in the papers: nano configurations for small images (e.g. the 8x8 scikit-learn digits
    # that ``reparam_models.train`` serves by default). One layout, three stems: the stem's patch
    # size maps an 8, 16 or 32 pixel input to the same 8x8 first stage.
    **{
        f"repmlpnet_n{size}": dict(channels=(16, 32, 64, 128), num_blocks=(1, 1, 1, 1),
                                   hs=(8, 4, 2, 1), num_sharesets=(1, 2, 4, 8),
                                   patch_size=size // 8, img_size=size)
        for size in (8, 16, 32)
    },
}


def _build(name: str, inference: bool, kwargs: dict[str, Any]) -> RepMLPNet:
    cfg = {**_CFGS[name], **kwargs}
    return RepMLPNet(inference=inference, **cfg)


@register_model
def repmlpnet_t224(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-T224 (38.29M params, 2.81G MACs, 76.62% top-1)."""
    return _build("repmlpnet_t224", inference, kwargs)


@register_model
def repmlpnet_t256(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-T256 (58.69M params, 4.26G MACs, 77.44% top-1)."""
    return _build("repmlpnet_t256", inference, kwargs)


@register_model
def repmlpnet_b224(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B224 (68.24M params, 6.68G MACs, 80.32% top-1)."""
    return _build("repmlpnet_b224", inference, kwargs)


@register_model
def repmlpnet_b256(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B256 (96.45M params, 9.64G MACs, 81.03% top-1)."""
    return _build("repmlpnet_b256", inference, kwargs)


@register_model
def repmlpnet_d256(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-D256 (86.89M params, 8.64G MACs, 80.83% top-1)."""
    return _build("repmlpnet_d256", inference, kwargs)


@register_model
def repmlpnet_l256(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-L256 (117.64M params, 11.61G MACs, 81.68% top-1)."""
    return _build("repmlpnet_l256", inference, kwargs)


@register_model
def repmlpnet_n8(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N8: nano, 8x8 input (stem patch 1), for small data; not in the papers."""
    return _build("repmlpnet_n8", inference, kwargs)


@register_model
def repmlpnet_n16(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N16: nano, 16x16 input (stem patch 2), for small data; not in the papers."""
    return _build("repmlpnet_n16", inference, kwargs)


@register_model
def repmlpnet_n32(*, inference: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N32: nano, 32x32 input (stem patch 4), for small data; not in the papers."""
    return _build("repmlpnet_n32", inference, kwargs)

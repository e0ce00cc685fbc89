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

from torch import Tensor, nn

from ._builder import build_model_with_cfg
from .checkpoint import Fold, KeyMap, fold_norms, layer_folds
from .layers import ConvBN, FeatureInfo, RepMLPNetUnit
from .model_api import ZooModel, check_global_pool, normalize_out_indices, pool_and_flatten
from .registry import register_model, register_pretrained_cfgs

__all__ = ["REFERENCE_KEYS", "RepMLPNet", "checkpoint_filter_fn"]

_PAPER = "RepMLPNet: Hierarchical Vision MLP with Re-parameterized Locality"
_ARXIV = "2112.11081"
_ORIGIN = "https://github.com/DingXiaoH/RepMLP"


class RepMLPNet(ZooModel, nn.Module):
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
        global_pool: ``"avg"`` (the paper's), ``"max"`` or ``""`` (no pooling, only with
            ``num_classes=0``: the normed last map is returned).
        patch_size: stem conv kernel and stride.
        img_size: design resolution (metadata, used by ``pretrained_cfg``).
        features_only: build without the head; ``forward`` returns the stage maps of
            ``out_indices`` (the stages after the last one are not built).
        out_indices: the stages ``features_only`` returns (timm's convention; default all).
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
        global_pool: str = "avg",
        patch_size: int = 4,
        img_size: int = 224,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        inference: bool = False,
    ) -> None:
        super().__init__()
        ws = hs if ws is None else ws
        n = len(channels)
        if not (len(num_blocks) == len(hs) == len(ws) == len(num_sharesets) == n):
            raise ValueError("RepMLPNet: channels, num_blocks, hs, ws and num_sharesets must "
                             "have one entry per stage")
        self.out_indices = normalize_out_indices(out_indices, n) if features_only else None
        built = self.out_indices[-1] + 1 if self.out_indices else n
        self.num_stages = built
        self.num_classes = num_classes
        self.num_features = int(channels[-1])
        self.features_only = features_only
        self.inference = inference
        self.global_pool = self._checked_pool(global_pool, num_classes)
        self.stem = ConvBN(in_chans, channels[0], patch_size, stride=patch_size, padding=0,
                           act=nn.ReLU(), inference=inference)
        stages: list[nn.Module] = []
        embeds: list[nn.Module] = []
        info = [
            {"num_chs": int(channels[i]), "reduction": patch_size * 2**i, "module": f"stages.{i}"}
            for i in range(n)
        ]
        for i in range(built):
            stages.append(nn.ModuleList([
                RepMLPNetUnit(
                    channels[i], hs[i], ws[i], num_sharesets=num_sharesets[i],
                    reparam_conv_k=reparam_conv_k,
                    globalperceptron_reduce=globalperceptron_reduce, ffn_expand=ffn_expand,
                    inference=inference, name=f"stages.{i}.{j}",
                )
                for j in range(num_blocks[i])
            ]))
            if i < built - 1:
                embeds.append(ConvBN(channels[i], channels[i + 1], 2, stride=2, padding=0,
                                     act=nn.ReLU(), inference=inference))
        self.stages = nn.ModuleList(stages)
        self.embeds = nn.ModuleList(embeds)
        self.feature_info = FeatureInfo(info, self.out_indices)
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
        self.pretrained_cfg: dict[str, Any] = _cfg(
            input_size=(in_chans, img_size, img_size),
            pool_size=(hs[-1], ws[-1]),
            num_classes=num_classes,
            paper=_PAPER,
            arxiv=_ARXIV,
        )

    def _checked_pool(self, global_pool: str, num_classes: int) -> str:
        check_global_pool(global_pool, num_classes, "RepMLPNet")
        if self.inference and num_classes > 0 and global_pool != "avg":
            raise ValueError(
                "RepMLPNet: the inference form has head_norm folded into head through the "
                f"average pool, so it needs global_pool='avg' (got {global_pool!r}); build the "
                "training form, or use num_classes=0"
            )
        return global_pool

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The stage maps, strides 4/8/16/32 (channels ``feature_info.channels()``); a
        ``features_only`` model computes the stages up to its last ``out_indices`` only."""
        x = self.stem(x)
        feats: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            for unit in stage:
                x = self._run_block(unit, x)
            feats.append(x)
            if i < self.num_stages - 1:
                x = self.embeds[i](x)
        return feats

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Classify the last stage map: BN -> global pool -> Linear.

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
        x = pool_and_flatten(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        feats = self.forward_features(x)
        if self.out_indices is not None:
            return [feats[i] for i in self.out_indices]
        return self.forward_head(feats[-1])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``Linear(num_features, num_classes)`` head (``Identity`` for 0), optionally
        with another ``global_pool``. ``head_norm`` stays as it is: in the inference form it is
        already folded into the old head, so there the new head sees un-normed features."""
        if self.features_only:
            raise RuntimeError("RepMLPNet was built with features_only=True: it has no head")
        pool = self.global_pool if global_pool is None else global_pool
        self.global_pool = self._checked_pool(pool, num_classes)
        old = next(self.head.parameters(), None) if isinstance(self.head, nn.Module) else None
        like = old if old is not None else next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
            if num_classes > 0 else nn.Identity()
        )
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes


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



def _cfg(**kwargs: Any) -> dict[str, Any]:
    """The pretrained configuration of a RepMLPNet variant (evaluation as in the reference:
    resize to size/0.875 with bicubic interpolation, centre crop, ImageNet mean/std)."""
    return {
        "num_classes": 1000,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "first_conv": "stem.conv",
        "classifier": "head",
        "fixed_input_size": False,
        "license": "mit",
        "paper_ids": f"arXiv:{_ARXIV}",
        "paper_name": _PAPER,
        "origin_url": _ORIGIN,
        **kwargs,
    }


default_cfgs: dict[str, dict[str, Any]] = {
    name: _cfg(input_size=(3, cfg["img_size"], cfg["img_size"]),
               pool_size=(cfg["hs"][-1], cfg["hs"][-1]))
    for name, cfg in _CFGS.items()
}
register_pretrained_cfgs(default_cfgs)


# Reference (github.com/DingXiaoH/RepMLP, repmlpnet.py) keys -> ours: the stem is
# ``conv_embedding`` there; every other key is the same.
REFERENCE_KEYS = KeyMap(
    ours=((r"^conv_embedding\.", "stem."),),
    reference=((r"^stem\.", "conv_embedding."),),
)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A reference or own RepMLPNet checkpoint in ``model``'s key layout: keys renamed
    (:data:`REFERENCE_KEYS`) and, for an inference-form model, the norms the reference's deployed
    checkpoints keep (conv+BN units, ``prebn2``, ``head_norm``) folded in."""
    sd = REFERENCE_KEYS.to_ours(state_dict)
    folds = layer_folds(model)
    if (
        isinstance(model, RepMLPNet)
        and isinstance(getattr(model, "head_norm", None), nn.Identity)
        and isinstance(getattr(model, "head", None), nn.Linear)
    ):
        folds.append(Fold("head_norm", "head", before=True))
    return fold_norms(sd, folds)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    return build_model_with_cfg(RepMLPNet, variant, pretrained, model_args=_CFGS[variant],
                                pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def repmlpnet_t224(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-T224 (38.29M params, 2.81G MACs, 76.62% top-1)."""
    return _create("repmlpnet_t224", pretrained, **kwargs)


@register_model
def repmlpnet_t256(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-T256 (58.69M params, 4.26G MACs, 77.44% top-1)."""
    return _create("repmlpnet_t256", pretrained, **kwargs)


@register_model
def repmlpnet_b224(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B224 (68.24M params, 6.68G MACs, 80.32% top-1)."""
    return _create("repmlpnet_b224", pretrained, **kwargs)


@register_model
def repmlpnet_b256(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-B256 (96.45M params, 9.64G MACs, 81.03% top-1)."""
    return _create("repmlpnet_b256", pretrained, **kwargs)


@register_model
def repmlpnet_d256(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-D256 (86.89M params, 8.64G MACs, 80.83% top-1)."""
    return _create("repmlpnet_d256", pretrained, **kwargs)


@register_model
def repmlpnet_l256(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-L256 (117.64M params, 11.61G MACs, 81.68% top-1)."""
    return _create("repmlpnet_l256", pretrained, **kwargs)


@register_model
def repmlpnet_n8(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N8: nano, 8x8 input (stem patch 1), for small data; not in the papers."""
    return _create("repmlpnet_n8", pretrained, **kwargs)


@register_model
def repmlpnet_n16(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N16: nano, 16x16 input (stem patch 2), for small data; not in the papers."""
    return _create("repmlpnet_n16", pretrained, **kwargs)


@register_model
def repmlpnet_n32(pretrained: bool = False, **kwargs: Any) -> RepMLPNet:
    """RepMLPNet-N32: nano, 32x32 input (stem patch 4), for small data; not in the papers."""
    return _create("repmlpnet_n32", pretrained, **kwargs)

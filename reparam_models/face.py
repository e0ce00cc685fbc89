"""Face recognition with RepMLP: FaceResNet, RepMLP-FaceRes, a CosFace / AM-Softmax margin head.

Paper: Xiaohan Ding, Chunlong Xia, Xiangyu Zhang, Xiaojie Chu, Jungong Han, Guiguang Ding,
"RepMLP: Re-parameterizing Convolutions into Fully-connected Layers for Image Recognition",
arXiv:2105.01883 (Sec. on face recognition: FaceResNet baseline vs RepMLP-FaceRes, trained
with AM-Softmax on MS1M-V2). The margin head follows Wang et al., "CosFace: Large Margin Cosine
Loss for Deep Face Recognition", arXiv:1801.09414 / "Additive Margin Softmax for Face
Verification", arXiv:1801.05599. The authors released no face code; this is our
implementation of the paper's description.

FaceResNet: 96x96 input; stem of two 3x3/2 conv+BN+ReLU units (stride 4); stages c2..c5 with
depths 3, 2, 2, 2 and widths 128, 256, 512, 1024 (maps 24, 12, 6, 3); bottlenecks whose 1x1
convs do not reduce channels. RepMLP-FaceRes turns the stride-1 blocks of c2-c4 into RepMLP
Bottlenecks (h = w = 6, r = 2, g = 4). The embedding layer is dropout -> a conv+BN unit whose
kernel covers the whole 3x3 map (a fully-connected layer on the flattened map, 1024*9 -> 512) ->
L2 normalisation; the model outputs unit-norm embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._builder import build_model_with_cfg
from .checkpoint import fold_norms, layer_folds
from .layers import ConvBN, FeatureInfo, RepMLPStageConfig, make_resnet_stage
from .model_api import ZooModel, normalize_out_indices
from .registry import register_model, register_pretrained_cfgs

__all__ = ["FaceResNet", "CosFaceHead", "checkpoint_filter_fn", "cosine_similarity",
           "verify_pair"]


class FaceResNet(ZooModel, nn.Module):
    """FaceResNet / RepMLP-FaceRes embedding network (outputs L2-normalised embeddings).

    Args:
        use_repmlp: replace the stride-1 blocks of ``repmlp_stages`` with RepMLP Bottlenecks.
        num_blocks, channels: stage depths and widths (c2..c5).
        img_size: square input size (the RepMLP blocks are built for it).
        h, w: RepMLP partition size; r: RepMLP Bottleneck reduction; fc3_groups: g.
        embedding_dim: embedding size (``num_classes`` is an alias: the embedding layer is
            this model's "classifier" in timm's API).
        drop_rate: dropout before the embedding layer.
        features_only: no embedding layer; ``forward`` returns the stage maps of
            ``out_indices`` (strides 4/8/16/32; the stages after the last one are not built).
        out_indices: the stages ``features_only`` returns (default all).
        inference: build the inference (deployed) form.

    timm's ``global_pool`` is ``""`` here: the embedding layer is a conv over the whole last map
    (a fully-connected layer on the flattened map), there is no pooling to choose.
    """

    def __init__(
        self,
        use_repmlp: bool = False,
        num_blocks: Sequence[int] = (3, 2, 2, 2),
        channels: Sequence[int] = (128, 256, 512, 1024),
        img_size: int = 96,
        stem_channels: int = 64,
        h: int = 6,
        w: int | None = None,
        r: int = 2,
        fc3_groups: int = 4,
        reparam_conv_k: Sequence[int] = (1, 3, 5),
        fc1_fc2_reduction: int = 1,
        repmlp_stages: Sequence[int] = (0, 1, 2),
        embedding_dim: int = 512,
        drop_rate: float = 0.0,
        in_chans: int = 3,
        num_classes: int | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        inference: bool = False,
    ) -> None:
        super().__init__()
        if img_size % 32:
            raise ValueError(f"FaceResNet: img_size must be a multiple of 32, got {img_size}")
        w = h if w is None else w
        embedding_dim = embedding_dim if num_classes is None else num_classes
        self.img_size = img_size
        self.embedding_dim = embedding_dim
        self.num_classes = embedding_dim
        self.num_features = int(channels[-1])
        self.global_pool = ""
        self.features_only = features_only
        self.inference = inference
        self.out_indices = (
            normalize_out_indices(out_indices, len(num_blocks)) if features_only else None
        )
        built = self.out_indices[-1] + 1 if self.out_indices else len(num_blocks)
        self.stem = nn.Sequential(
            ConvBN(in_chans, stem_channels, 3, stride=2, padding=1, act=nn.ReLU(),
                   inference=inference),
            ConvBN(stem_channels, stem_channels, 3, stride=2, padding=1, act=nn.ReLU(),
                   inference=inference),
        )
        stages: list[nn.Module] = []
        info = FeatureInfo()
        in_ch = stem_channels
        reduction = 4
        for i, (depth, out_ch) in enumerate(zip(num_blocks, channels, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            cfg = None
            if use_repmlp and i in repmlp_stages:
                size = img_size // reduction
                cfg = RepMLPStageConfig(
                    block_type="bottleneck", H=size, W=size, h=h, w=w,
                    reparam_conv_k=tuple(reparam_conv_k), fc1_fc2_reduction=fc1_fc2_reduction,
                    fc3_groups=fc3_groups, r=r,
                )
            # Face bottlenecks: the 1x1 convs keep the width (mid = out).
            stages.append(make_resnet_stage(in_ch, out_ch, out_ch, depth, stride, repmlp=cfg,
                                            inference=inference, name=f"stages.{i}"))
            info.append({"num_chs": int(out_ch), "reduction": reduction, "module": f"stages.{i}"})
            in_ch = out_ch
        self.stages = nn.Sequential(*stages[:built])
        self.feature_info = FeatureInfo(info, self.out_indices)
        self._final = img_size // reduction
        if not features_only:
            self.dropout = nn.Dropout(drop_rate)
            # A conv over the whole final map == a fully-connected layer on the flattened map.
            self.embedding: nn.Module = ConvBN(in_ch, embedding_dim, self._final, padding=0,
                                               inference=inference)
        self.pretrained_cfg: dict[str, Any] = _cfg(
            input_size=(in_chans, img_size, img_size),
            num_classes=embedding_dim,
            embedding_dim=embedding_dim,
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage map (N, 1024, 3, 3) for a 96x96 input."""
        if not self._checkpointing():
            return self.stages(self.stem(x))
        x = self.stem(x)
        for stage in self.stages:
            x = self._run_sequential(stage, x)
        return x

    def forward_embedding(self, x: Tensor) -> Tensor:
        """Un-normalised embeddings (N, embedding_dim)."""
        if self.features_only:
            raise RuntimeError("FaceResNet was built with features_only=True: it has no "
                               "embedding layer")
        return torch.flatten(self.embedding(self.dropout(self.forward_features(x))), 1)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """L2-normalised embeddings (N, embedding_dim); the selected stage maps for a
        ``features_only`` model."""
        if self.out_indices is not None:
            feats = []
            x = self.stem(x)
            for stage in self.stages:
                x = self._run_sequential(stage, x)
                feats.append(x)
            return [feats[i] for i in self.out_indices]
        return F.normalize(self.forward_embedding(x), dim=1)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh embedding layer with ``num_classes`` outputs (``Identity`` for 0: the
        flattened last map is normalised and returned). ``global_pool`` must be ``None`` or
        ``""``: this model does not pool."""
        if self.features_only:
            raise RuntimeError("FaceResNet was built with features_only=True: it has no "
                               "embedding layer")
        if global_pool not in (None, ""):
            raise ValueError(f"FaceResNet: global_pool must be '' (no pooling: the embedding "
                             f"layer covers the whole map), got {global_pool!r}")
        like = next(self.parameters())
        self.embedding = (
            ConvBN(self.num_features, num_classes, self._final, padding=0,
                   inference=self.inference).to(device=like.device, dtype=like.dtype)
            if num_classes > 0 else nn.Identity()
        )
        self.embedding_dim = self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = self.pretrained_cfg["embedding_dim"] = num_classes


class CosFaceHead(nn.Module):
    """AM-Softmax / CosFace margin head: ``logits = s * (cos(theta) - m * onehot(label))``.

    Use in training as ``F.cross_entropy(head(embeddings, labels), labels)``. Without labels it
    returns ``s * cos(theta)`` (no margin), e.g. for evaluation on the training identities.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.s = float(s)
        self.m = float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, "
                f"s={self.s}, m={self.m}")

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))
        if labels is not None:
            margin = F.one_hot(labels.long(), self.num_classes).to(cos.dtype) * self.m
            cos = cos - margin
        return cos * self.s


def cosine_similarity(emb_a: Tensor, emb_b: Tensor) -> Tensor:
    """Cosine similarity of paired embeddings along the last dimension (shape (...,))."""
    return (F.normalize(emb_a, dim=-1) * F.normalize(emb_b, dim=-1)).sum(dim=-1)


@torch.no_grad()
def verify_pair(model: nn.Module, img_a: Tensor, img_b: Tensor) -> Tensor:
    """Cosine similarity of the embeddings of two (batches of) face images.

    Runs ``model`` in eval mode (its previous mode is restored). Accepts (3, H, W) or
    (N, 3, H, W) images; returns a scalar tensor or one similarity per pair.
    """
    single = img_a.dim() == 3
    if single:
        img_a, img_b = img_a.unsqueeze(0), img_b.unsqueeze(0)
    if img_a.shape != img_b.shape:
        raise ValueError(f"verify_pair: image shapes differ: {tuple(img_a.shape)} vs "
                         f"{tuple(img_b.shape)}")
    was_training = model.training
    model.eval()
    try:
        emb = model(torch.cat([img_a, img_b], dim=0))
    finally:
        model.train(was_training)
    sim = cosine_similarity(emb[: img_a.shape[0]], emb[img_a.shape[0]:])
    return sim[0] if single else sim


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """The configuration of a face model. No reference code or weights exist: inputs are
    aligned 96x96 crops scaled to [-1, 1] (mean = std = 0.5), as in common face-recognition
    pipelines (our choice, not the paper's statement)."""
    return {
        "num_classes": 512,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "first_conv": "stem.0.conv",
        "classifier": "embedding",
        "fixed_input_size": True,
        "paper_ids": "arXiv:2105.01883",
        "paper_name": "RepMLP (face recognition)",
        "paper": "RepMLP (face recognition)",
        "arxiv": "2105.01883",
        "origin_url": None,
        **kwargs,
    }


default_cfgs = {
    name: _cfg(input_size=(3, 96, 96), embedding_dim=512)
    for name in ("face_resnet", "repmlp_face_res")
}
register_pretrained_cfgs(default_cfgs)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Our own face checkpoints (there is no reference implementation): for an inference-form
    model, the norms a deployed checkpoint may keep (conv+BN units, ``avg.bn``) folded in."""
    return fold_norms(dict(state_dict), layer_folds(model))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> FaceResNet:
    return build_model_with_cfg(FaceResNet, variant, pretrained,
                                model_args=dict(use_repmlp=variant == "repmlp_face_res"),
                                pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def face_resnet(pretrained: bool = False, **kwargs: Any) -> FaceResNet:
    """FaceResNet baseline (96x96 input, 512-d normalised embeddings)."""
    return _create("face_resnet", pretrained, **kwargs)


@register_model
def repmlp_face_res(pretrained: bool = False, **kwargs: Any) -> FaceResNet:
    """RepMLP-FaceRes: RepMLP Bottlenecks (h=w=6, r=2, g=4) in c2-c4."""
    return _create("repmlp_face_res", pretrained, **kwargs)

"""The RepMLP model family as plain training-time PyTorch models (timm style).

* RepMLPNet (RepMLP v2, arXiv:2112.11081): ``repmlpnet_{t224,t256,b224,b256,d256,l256}``.
* RepMLP-ResNet (RepMLP v1, arXiv:2105.01883): ``resnet50``, ``repmlp_res50_light_224``,
  ``repmlp_res50_bottleneck_224``, ``repmlp_res50_bottleneck_320_g8_16``,
  ``repmlp_res50_bottleneck_320_g4_8``.
* Face recognition (arXiv:2105.01883): ``face_resnet``, ``repmlp_face_res`` and
  :class:`CosFaceHead`.

No model here converts itself: deploy with the generic engine (``reparam.deploy``), or build the
inference form directly with ``create_model(name, inference=True)``.
"""

from __future__ import annotations

from . import face, repmlp_resnet, repmlpnet  # noqa: F401  (registers the models)
from .checkpoint import LoadResult, load_checkpoint, load_reference_state_dict
from .face import CosFaceHead, FaceResNet, cosine_similarity, verify_pair
from .layers import ConvBN, FeatureInfo, RepMLP, RepMLPBlock
from .registry import UnknownModelError, create_model, is_model, list_models, register_model
from .repmlp_resnet import RepMLPResNet
from .repmlpnet import RepMLPNet

__all__ = [
    "ConvBN",
    "CosFaceHead",
    "FaceResNet",
    "FeatureInfo",
    "LoadResult",
    "RepMLP",
    "RepMLPBlock",
    "RepMLPNet",
    "RepMLPResNet",
    "UnknownModelError",
    "cosine_similarity",
    "create_model",
    "is_model",
    "list_models",
    "load_checkpoint",
    "load_reference_state_dict",
    "register_model",
    "verify_pair",
]

from . import timm_bridge  # noqa: E402, F401  (registers the zoo with timm; safe without timm)

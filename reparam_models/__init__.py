"""The RepMLP model family as plain training-time PyTorch models, with timm's model API.

* RepMLPNet (RepMLP v2, arXiv:2112.11081): ``repmlpnet_{t224,t256,b224,b256,d256,l256}``.
* RepMLP-ResNet (RepMLP v1, arXiv:2105.01883): ``resnet50``, ``repmlp_res50_light_224``,
  ``repmlp_res50_bottleneck_224``, ``repmlp_res50_bottleneck_320_g8_16``,
  ``repmlp_res50_bottleneck_320_g4_8``.
* Face recognition (arXiv:2105.01883): ``face_resnet``, ``repmlp_face_res`` and
  :class:`CosFaceHead`.

No model here has conversion code: ``model.reparameterize()`` (timm's convention, also called by
``timm.utils.reparameterize_model``) and ``reparam.deploy(model)`` run the generic engine; or
build the inference form directly with ``create_model(name, inference=True)``.

Layout (timm's): ``registry`` holds the tables (entry points, pretrained configurations, local
weights files), each family file (``repmlpnet``, ``repmlp_resnet``, ``face``) owns its models,
configurations and checkpoint filter, ``_builder`` builds a variant and loads its weights,
``checkpoint`` reads and loads checkpoints for any family.
"""

from __future__ import annotations

from . import face, repmlp_resnet, repmlpnet  # noqa: F401  (registers the models)
from ._builder import PretrainedWeightsError, build_model_with_cfg
from ._factory import create_model
from .checkpoint import LoadResult, load_checkpoint, load_reference_state_dict
from .face import CosFaceHead, FaceResNet, cosine_similarity, verify_pair
from .layers import ConvBN, FeatureInfo, RepMLP, RepMLPBlock
from .model_api import Reparameterizable, ZooModel
from .registry import (
    UnknownModelError,
    get_pretrained_cfg,
    is_model,
    list_models,
    model_entrypoint,
    pretrained_file,
    register_model,
    set_pretrained_file,
)
from .repmlp_resnet import RepMLPResNet
from .repmlpnet import RepMLPNet

__all__ = [
    "ConvBN",
    "CosFaceHead",
    "FaceResNet",
    "FeatureInfo",
    "LoadResult",
    "PretrainedWeightsError",
    "RepMLP",
    "RepMLPBlock",
    "RepMLPNet",
    "RepMLPResNet",
    "Reparameterizable",
    "UnknownModelError",
    "ZooModel",
    "build_model_with_cfg",
    "cosine_similarity",
    "create_model",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "load_checkpoint",
    "load_reference_state_dict",
    "model_entrypoint",
    "pretrained_file",
    "register_model",
    "set_pretrained_file",
    "verify_pair",
]

from . import timm_bridge  # noqa: E402, F401  (registers the zoo with timm; safe without timm)

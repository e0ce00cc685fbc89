"""Registry behaviour and the face-recognition models / helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reparam_models import (
    CosFaceHead,
    FaceResNet,
    UnknownModelError,
    cosine_similarity,
    create_model,
    is_model,
    list_models,
    register_model,
    verify_pair,
)
from reparam_models.layers import RepMLP, RepMLPBottleneckBlock

# ------------------------------------------------------------------------------ registry


def test_list_models_pattern() -> None:
    assert list_models("repmlpnet_*") == [
        "repmlpnet_b224", "repmlpnet_b256", "repmlpnet_d256", "repmlpnet_l256",
        "repmlpnet_n16", "repmlpnet_n32", "repmlpnet_n8", "repmlpnet_t224", "repmlpnet_t256",
    ]
    assert list_models("*face*") == ["face_resnet", "repmlp_face_res"]
    assert list_models() == sorted(list_models())
    assert is_model("resnet50") and not is_model("resnet51")


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="repmlpnet_t224") as info:
        create_model("repmlpnet_t244")
    assert isinstance(info.value, ValueError)
    assert "Did you mean" in str(info.value)


def test_register_model_rejects_duplicates() -> None:
    def resnet50(*, inference: bool = False) -> nn.Module:  # same name as a registered model
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet50)


def test_create_model_kwargs() -> None:
    with torch.device("meta"):
        model = create_model("resnet50", num_classes=7)
    assert model.head.out_features == 7
    with pytest.raises(TypeError):
        create_model("resnet50", no_such_argument=1)


# ------------------------------------------------------------------------------ face

SMALL_FACE = dict(channels=(16, 32, 64, 128), stem_channels=8, embedding_dim=32)


def test_face_model_structure() -> None:
    with torch.device("meta"):
        base = create_model("face_resnet").eval()
        rep = create_model("repmlp_face_res").eval()
        maps = [base.stem(torch.empty(1, 3, 96, 96))]
        for stage in base.stages:
            maps.append(stage(maps[-1]))
        emb = rep(torch.empty(2, 3, 96, 96))
    assert [m.shape[-1] for m in maps[1:]] == [24, 12, 6, 3]
    assert [m.shape[1] for m in maps[1:]] == [128, 256, 512, 1024]
    assert tuple(emb.shape) == (2, 512)
    # The stride-1 blocks of c2-c4 are RepMLP Bottlenecks: the last two of c2, the last of
    # c3 and of c4; c5 stays plain. h = w = 6, r = 2, g = 4.
    kinds = [[isinstance(b, RepMLPBottleneckBlock) for b in s] for s in rep.stages]
    assert kinds == [[False, True, True], [False, True], [False, True], [False, False]]
    repmlps = [m for m in rep.modules() if isinstance(m, RepMLP)]
    assert {(m.h, m.w, m.fc3_groups) for m in repmlps} == {(6, 6, 4)}
    assert [m.C for m in repmlps] == [64, 64, 128, 256]  # mid = width, RepMLP = mid / r
    assert [m.need_global_perceptron for m in repmlps] == [True, True, True, False]
    assert not any(isinstance(m, RepMLP) for m in base.modules())


@pytest.mark.parametrize("name", ["face_resnet", "repmlp_face_res"])
def test_face_embeddings_are_unit_norm(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, **SMALL_FACE).eval()
    emb = model(torch.randn(3, 3, 96, 96))
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_cosface_head_margin_and_training_step() -> None:
    torch.manual_seed(0)
    model = create_model("repmlp_face_res", **SMALL_FACE)
    head = CosFaceHead(32, num_classes=5, s=64, m=0.35)
    x, labels = torch.randn(4, 3, 96, 96), torch.tensor([0, 1, 2, 4])
    emb = model(x)
    logits = head(emb, labels)
    plain = head(emb)
    assert logits.shape == (4, 5)
    diff = plain - logits
    expected = F.one_hot(labels, 5).float() * 64 * 0.35
    torch.testing.assert_close(diff, expected, rtol=1e-5, atol=1e-4)
    assert plain.abs().max() <= 64 + 1e-4  # s * cos
    F.cross_entropy(logits, labels).backward()
    assert head.weight.grad is not None
    assert all(p.grad is not None for p in model.parameters())


def test_verify_pair_and_cosine_similarity() -> None:
    torch.manual_seed(0)
    model: FaceResNet = create_model("face_resnet", **SMALL_FACE)  # type: ignore[assignment]
    model.train()
    a, b = torch.randn(2, 3, 96, 96), torch.randn(2, 3, 96, 96)
    same = verify_pair(model, a, a)
    torch.testing.assert_close(same, torch.ones(2), rtol=1e-5, atol=1e-5)
    sims = verify_pair(model, a, b)
    assert sims.shape == (2,) and bool(((sims >= -1 - 1e-5) & (sims <= 1 + 1e-5)).all())
    assert verify_pair(model, a[0], b[0]).shape == ()
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        model.eval()
        emb_a, emb_b = model(a), model(b)
    torch.testing.assert_close(cosine_similarity(emb_a, emb_b), sims, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        cosine_similarity(emb_a, emb_b), F.cosine_similarity(emb_a, emb_b), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="shapes differ"):
        verify_pair(model, a, b[:1])

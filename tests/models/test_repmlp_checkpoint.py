"""Loading the reference implementation's checkpoints (training-time and deployed layouts).

The reference key names and shapes below are copied from the reference's released state_dicts
(a few representative keys per variant, plus the total key counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _repmlp_oracle import deploy_state_dict, randomize_bn
from torch import Tensor, nn

from reparam_models import create_model, load_reference_state_dict
from reparam_models.checkpoint import map_reference_keys, to_reference_keys
from reparam_models.layers import ConvBN

# reference state_dict name -> (our model, form, total number of keys, representative keys)
REFERENCE: dict[str, tuple[str, str, int, dict[str, tuple[int, ...]]]] = {
    "RepMLPNet-T224-train": ("repmlpnet_t224", "train", 559, {
        "conv_embedding.conv.weight": (64, 3, 4, 4),
        "conv_embedding.bn.running_var": (64,),
        "stages.0.0.repmlp_block.fc3.weight": (3136, 3136, 1, 1),
        "stages.0.0.repmlp_block.fc3_bn.weight": (1,),
        "stages.0.0.repmlp_block.repconv3.conv.weight": (1, 1, 3, 3),
        "stages.1.1.repmlp_block.fc3.weight": (3136, 784, 1, 1),
        "stages.2.5.repmlp_block.gp.fc1.weight": (64, 256, 1, 1),
        "stages.3.1.repmlp_block.fc3.weight": (6272, 49, 1, 1),
        "stages.3.1.repmlp_block.repconv1.bn.running_mean": (128,),
        "stages.3.1.ffn_block.ffn_fc1.conv.weight": (2048, 512, 1, 1),
        "stages.3.1.prebn2.weight": (512,),
        "embeds.2.conv.weight": (512, 256, 2, 2),
        "head_norm.running_var": (512,),
        "head.weight": (1000, 512),
    }),
    "RepMLPNet-T224-deploy": ("repmlpnet_t224", "deploy", 367, {
        "conv_embedding.bn.weight": (64,),
        "stages.0.0.repmlp_block.fc3.bias": (3136,),
        "stages.3.1.repmlp_block.fc3.weight": (6272, 49, 1, 1),
        "stages.3.1.repmlp_block.fc3.bias": (6272,),
        "stages.2.0.ffn_block.ffn_fc2.bn.running_mean": (256,),
        "embeds.0.bn.bias": (128,),
    }),
    "RepMLPNet-L256-train": ("repmlpnet_l256", "train", 1087, {
        "stages.3.1.repmlp_block.fc3.weight": (16384, 64, 1, 1),
        "stages.2.17.repmlp_block.fc3.weight": (8192, 256, 1, 1),
        "stages.0.0.repmlp_block.fc3.weight": (4096, 4096, 1, 1),
    }),
    "RepMLPRes50_Bottleneck_224-train": ("repmlp_res50_bottleneck_224", "train", 632, {
        "stage0.0.conv.weight": (64, 3, 7, 7),
        "stage1.0.shortcut.conv.weight": (256, 64, 1, 1),
        "stage2.1.btnk_repmlp.fc1_fc2.fc1.weight": (1024, 1024),
        "stage2.1.btnk_repmlp.avg.bn.running_var": (64,),
        "stage2.1.btnk_repmlp.fc3.weight": (3136, 392, 1, 1),
        "stage2.1.btnk_repmlp.fc3_bn.running_mean": (3136,),
        "stage2.1.btnk_repmlp.repconv5.conv.weight": (64, 8, 5, 5),
        "stage3.5.btnk_repmlp.fc1_fc2.fc2.weight": (256, 256),
        "stage3.5.btnk_conv2.conv.weight": (64, 256, 3, 3),
        "stage4.2.conv3.bn.weight": (2048,),
        "linear.weight": (1000, 2048),
    }),
    "RepMLPRes50_Bottleneck_224-deploy": ("repmlp_res50_bottleneck_224", "deploy", 172, {
        "stage0.0.conv.bias": (64,),
        "stage2.3.btnk_repmlp.fc3.bias": (3136,),
        "stage2.3.btnk_repmlp.fc1_fc2.fc1.bias": (1024,),
        "stage3.0.shortcut.conv.bias": (1024,),
    }),
    "RepMLPRes50_Light_224-train": ("repmlp_res50_light_224", "train", 536, {
        "stage3.1.light_repmlp.fc3.weight": (6272, 1568, 1, 1),
        "stage3.1.light_repmlp.repconv3.conv.weight": (128, 32, 3, 3),
        "stage3.1.light_repmlp.fc1_fc2.fc1.weight": (512, 512),
        "stage2.2.light_conv1.conv.weight": (64, 512, 1, 1),
    }),
    "RepMLPRes50_Light_224-deploy": ("repmlp_res50_light_224", "deploy", 140, {
        "stage3.1.light_repmlp.fc3.bias": (6272,),
        "stage3.4.light_conv3.conv.bias": (1024,),
    }),
}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _plain_units(model: nn.Module) -> list[str]:
    """conv+BN units outside the RepMLP blocks' local perceptrons."""
    return [n for n, m in model.named_modules()
            if isinstance(m, ConvBN) and not n.rsplit(".", 1)[-1].startswith("repconv")]


def _kept_norms(model: nn.Module) -> list[str]:
    """RepMLPNet norms that the reference's deploy keeps but our inference form folds."""
    names = [n for n, _ in model.named_modules() if n.endswith(".prebn2")]
    if isinstance(getattr(model, "head", None), nn.Linear):
        names.append("head_norm")
    return names


def reference_v2_deploy(train: nn.Module) -> dict[str, Tensor]:
    """A reference-style RepMLPNet deploy checkpoint: RepMLP blocks merged (fc3 with bias), but
    the plain conv+BN units keep their BN, and so do ``prebn2`` and ``head_norm``, as the
    reference's locality_injection() leaves them."""
    sd = deploy_state_dict(train)
    train_sd = train.state_dict()
    for n in _plain_units(train):
        del sd[f"{n}.conv.bias"]
        sd[f"{n}.conv.weight"] = train_sd[f"{n}.conv.weight"].clone()
        for s in _BN_KEYS:
            sd[f"{n}.bn.{s}"] = train_sd[f"{n}.bn.{s}"].clone()
    for n in _kept_norms(train):
        for s in _BN_KEYS:
            sd[f"{n}.{s}"] = train_sd[f"{n}.{s}"].clone()
    # (the FFN's first conv is a plain unit: restored above to its training weights)
    if "head_norm" in _kept_norms(train):
        sd["head.weight"], sd["head.bias"] = train_sd["head.weight"], train_sd["head.bias"]
    return to_reference_keys(train, sd)


def reference_layout(name: str, form: str) -> dict[str, tuple[int, ...]]:
    """Our model's keys written in the reference's names, in the given reference layout."""
    with torch.device("meta"):
        model = create_model(name, inference=form == "deploy")
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if form == "deploy" and name.startswith("repmlpnet"):
        # the reference keeps the BNs of plain units, prebn2 and head_norm
        for n in _plain_units(model):
            del keys[f"{n}.conv.bias"]
            c = keys[f"{n}.conv.weight"][0]
            keys.update({f"{n}.bn.{s}": (() if s == "num_batches_tracked" else (c,))
                         for s in _BN_KEYS})
        for n in _kept_norms(model):
            target = "head.weight" if n == "head_norm" else (
                n[: -len("prebn2")] + "ffn_block.ffn_fc1.conv.weight")
            c = keys[target][1]
            keys.update({f"{n}.{s}": (() if s == "num_batches_tracked" else (c,))
                         for s in _BN_KEYS})
    return {to_reference_keys(model, {k: torch.empty(0)}).popitem()[0]: v
            for k, v in keys.items()}


@pytest.mark.parametrize("ref_name", list(REFERENCE))
def test_reference_key_layout(ref_name: str) -> None:
    name, form, count, sample = REFERENCE[ref_name]
    layout = reference_layout(name, form)
    assert len(layout) == count
    for key, shape in sample.items():
        assert layout.get(key) == shape, key


def test_key_mapping_examples() -> None:
    with torch.device("meta"):
        net = create_model("repmlpnet_t224")
        res = create_model("resnet50")
    t = torch.empty(0)
    assert list(map_reference_keys(net, {"conv_embedding.conv.weight": t})) == ["stem.conv.weight"]
    assert list(map_reference_keys(res, {"stage0.0.bn.bias": t, "stage3.2.conv1.conv.weight": t,
                                         "linear.bias": t})) == [
        "stem.bn.bias", "stages.2.2.conv1.conv.weight", "head.bias"]
    # Our own keys pass through unchanged; the inverse mapping restores the reference names.
    ours = {"stem.conv.weight": t, "stages.3.1.conv1.conv.weight": t, "head.weight": t}
    assert map_reference_keys(res, ours).keys() == ours.keys()
    assert list(to_reference_keys(res, ours)) == [
        "stage0.0.conv.weight", "stage4.1.conv1.conv.weight", "linear.weight"]


SMALL: dict[str, tuple[dict[str, Any], int]] = {
    "repmlpnet_t224": (dict(channels=(8, 16, 32, 64), hs=(8, 4, 2, 1),
                            num_sharesets=(1, 2, 4, 8), num_classes=10), 32),
    "repmlp_res50_bottleneck_224": (dict(channels=(64, 128, 256, 512), stem_channels=16,
                                         img_size=64, h=4, num_classes=10), 64),
    "repmlp_res50_light_224": (dict(channels=(64, 128, 256, 512), stem_channels=16,
                                    img_size=64, h=4, num_classes=10), 64),
}


def _small(name: str, inference: bool = False) -> tuple[nn.Module, Tensor]:
    kwargs, size = SMALL[name]
    torch.manual_seed(0)
    model = create_model(name, inference=inference, **kwargs).double().eval()
    return model, torch.randn(2, 3, size, size, dtype=torch.float64)


@pytest.mark.parametrize("name", list(SMALL))
def test_training_checkpoint_round_trip(name: str) -> None:
    src, x = _small(name)
    randomize_bn(src, seed=1)
    ref_sd = to_reference_keys(src, src.state_dict())
    dst, _ = _small(name)
    result = load_reference_state_dict(dst, ref_sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_deployed_checkpoint_loads_into_inference_form(name: str) -> None:
    train, x = _small(name)
    randomize_bn(train, seed=2)
    if name.startswith("repmlpnet"):
        ref_sd = reference_v2_deploy(train)
        assert "conv_embedding.bn.running_var" in ref_sd  # BN of a plain unit, kept unfolded
    else:
        ref_sd = to_reference_keys(train, deploy_state_dict(train))
        assert "stage0.0.conv.bias" in ref_sd
    if name.startswith("repmlpnet"):
        assert "stages.0.0.prebn2.running_var" in ref_sd and "head_norm.weight" in ref_sd
    infer, _ = _small(name, inference=True)
    load_reference_state_dict(infer, ref_sd)
    with torch.no_grad():
        torch.testing.assert_close(infer(x), train(x), rtol=1e-9, atol=1e-9)


def test_deployed_checkpoint_with_unfolded_pooled_bn_loads() -> None:
    """A v1 deployed checkpoint that kept the BN after the Global Perceptron's pooling
    (``avg.bn``) loads too: the loader folds it into ``fc1_fc2.fc1``."""
    train, x = _small("repmlp_res50_light_224")
    randomize_bn(train, seed=4)
    sd = deploy_state_dict(train)
    train_sd = train.state_dict()
    units = [n for n, m in train.named_modules() if n.endswith("light_repmlp")
             and m.need_global_perceptron]
    assert units
    for n in units:
        for s in _BN_KEYS:
            sd[f"{n}.avg.bn.{s}"] = train_sd[f"{n}.avg.bn.{s}"].clone()
        for s in ("weight", "bias"):
            sd[f"{n}.fc1_fc2.fc1.{s}"] = train_sd[f"{n}.fc1_fc2.fc1.{s}"].clone()
    infer, _ = _small("repmlp_res50_light_224", inference=True)
    load_reference_state_dict(infer, to_reference_keys(train, sd))
    with torch.no_grad():
        torch.testing.assert_close(infer(x), train(x), rtol=1e-9, atol=1e-9)


def test_layout_mismatch_errors() -> None:
    train, _ = _small("repmlpnet_t224")
    infer, _ = _small("repmlpnet_t224", inference=True)
    with pytest.raises(ValueError, match="training-time checkpoint.*reparam.deploy"):
        load_reference_state_dict(infer, to_reference_keys(train, train.state_dict()))
    with pytest.raises(ValueError, match="deployed checkpoint.*inference=True"):
        load_reference_state_dict(train, reference_v2_deploy(train))

    v1, _ = _small("repmlp_res50_light_224")
    v1_infer, _ = _small("repmlp_res50_light_224", inference=True)
    with pytest.raises(ValueError, match="training-time checkpoint"):
        load_reference_state_dict(v1_infer, to_reference_keys(v1, v1.state_dict()))


def test_missing_unexpected_and_shape_errors() -> None:
    model, _ = _small("repmlpnet_t224")
    sd = to_reference_keys(model, model.state_dict())
    del sd["stages.1.0.prebn1.weight"]
    sd["stages.1.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): stages\.1\.0\.prebn1\.weight.*"
                                         r"unexpected keys \(1\): stages\.1\.0\.extra\.weight"):
        load_reference_state_dict(model, sd)
    result = load_reference_state_dict(model, sd, strict=False)
    assert result.missing_keys == ["stages.1.0.prebn1.weight"]
    assert result.unexpected_keys == ["stages.1.0.extra.weight"]

    other = create_model("repmlpnet_t224", channels=(8, 16, 32, 128), hs=(8, 4, 2, 1),
                         num_sharesets=(1, 2, 4, 8), num_classes=10)
    with pytest.raises(ValueError, match="shape mismatch.*wrong variant"):
        load_reference_state_dict(other, to_reference_keys(model, model.state_dict()))


def test_missing_bn_counters_are_tolerated() -> None:
    model, x = _small("repmlpnet_t224")
    sd = {k: v for k, v in to_reference_keys(model, model.state_dict()).items()
          if not k.endswith("num_batches_tracked")}
    dst, _ = _small("repmlpnet_t224")
    load_reference_state_dict(dst, sd)


def test_create_model_pretrained_path(tmp_path: Path) -> None:
    src, x = _small("repmlp_res50_bottleneck_224")
    randomize_bn(src, seed=3)
    kwargs, _ = SMALL["repmlp_res50_bottleneck_224"]
    ref_sd = to_reference_keys(src, src.state_dict())

    # A training script's checkpoint: nested under "model", saved from DistributedDataParallel.
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in ref_sd.items()}}, path)
    model = create_model("repmlp_res50_bottleneck_224", pretrained_path=path, **kwargs)
    with torch.no_grad():
        torch.testing.assert_close(model.double().eval()(x), src(x), rtol=1e-6, atol=1e-6)

    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    st = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in ref_sd.items()}, str(st))
    model = create_model("repmlp_res50_bottleneck_224", pretrained_path=st, **kwargs)
    with torch.no_grad():
        torch.testing.assert_close(model.double().eval()(x), src(x), rtol=1e-6, atol=1e-6)

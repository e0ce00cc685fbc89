"""Zoo-wide checks for every registered model: build, torch.fx trace, forward, inference layout,
parameter and MAC counts (``FlopCounterMode``, MACs = FLOPs / 2) against the papers' tables.

Full-size models are built on the meta device (no memory, no compute); real forwards run on
shrunken configurations of every variant. A full-size CPU forward of every model is ``slow``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from _repmlp_oracle import (
    check_inference_layout,
    deploy_state_dict,
    expected_inference_keys,
    randomize_bn,
)
from _small_configs import small_kwargs
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reparam_models import create_model, list_models

ALL_MODELS = list_models()

# Training-time (params [M], MACs [G]) from the papers' tables; deploy numbers where published.
SPEC: dict[str, dict[str, float]] = {
    "repmlpnet_t224": dict(params=38.29, macs=2.81, deploy_params=38.33),
    "repmlpnet_t256": dict(params=58.69, macs=4.26),
    "repmlpnet_b224": dict(params=68.24, macs=6.68),
    "repmlpnet_b256": dict(params=96.45, macs=9.64),
    "repmlpnet_d256": dict(params=86.89, macs=8.64),
    "repmlpnet_l256": dict(params=117.64, macs=11.61, deploy_params=117.82),
    "resnet50": dict(params=25.53, macs=4.09),
    "repmlp_res50_light_224": dict(params=87.04, macs=3.30, deploy_params=86.14,
                                   deploy_macs=3.08),
    "repmlp_res50_bottleneck_224": dict(params=41.07, macs=3.95, deploy_params=40.87,
                                        deploy_macs=3.89),
}
REL_TOL = 0.005

def input_size(model: nn.Module) -> int:
    return int(model.pretrained_cfg["input_size"][-1])


@functools.cache
def meta_pair(name: str) -> tuple[nn.Module, nn.Module]:
    with torch.device("meta"):
        return create_model(name).eval(), create_model(name, inference=True).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_TRACED: dict[int, torch.fx.GraphModule] = {}


def meta_traced(model: nn.Module) -> torch.fx.GraphModule:
    if id(model) not in _TRACED:
        _TRACED[id(model)] = torch.fx.symbolic_trace(model)
    return _TRACED[id(model)]


def macs(model: nn.Module, size: int) -> float:
    """MACs of one image through ``model``'s torch.fx graph (also checks the output shape)."""
    x = torch.empty(1, 3, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = meta_traced(model)(x)
    cfg = model.pretrained_cfg
    assert tuple(out.shape) == (1, cfg.get("embedding_dim", cfg.get("num_classes")))
    return counter.get_total_flops() / 2


def test_zoo_is_complete() -> None:
    expected = {
        "repmlpnet_t224", "repmlpnet_t256", "repmlpnet_b224", "repmlpnet_b256",
        "repmlpnet_d256", "repmlpnet_l256", "resnet50", "repmlp_res50_light_224",
        "repmlp_res50_bottleneck_224", "repmlp_res50_bottleneck_320_g8_16",
        "repmlp_res50_bottleneck_320_g4_8", "face_resnet", "repmlp_face_res",
    }
    assert expected <= set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_build_trace_layout(name: str) -> None:
    train, infer = meta_pair(name)

    # torch.fx: both forms trace (the traced graphs are run in test_zoo_params_and_macs).
    for model in (train, infer):
        assert isinstance(meta_traced(model), torch.fx.GraphModule)

    # Inference form: exactly the documented layout.
    assert set(infer.state_dict()) == expected_inference_keys(train)
    check_inference_layout(infer)
    train_sd = train.state_dict()
    for k, v in infer.state_dict().items():
        if k in train_sd:
            assert v.shape == train_sd[k].shape, k
        else:  # a bias gained by a conv+BN unit or an fc3
            assert k.endswith(".bias"), k
            assert v.shape == train_sd[k[: -len("bias")] + "weight"].shape[:1], k


@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_params_and_macs(name: str) -> None:
    train, infer = meta_pair(name)
    size = input_size(train)
    p_train, p_infer = n_params(train), n_params(infer)
    m_train, m_infer = macs(train, size), macs(infer, size)
    assert p_train > 0 and m_train > 0
    # Deploying never adds MACs; it removes the local-perceptron convs.
    assert m_infer <= m_train
    spec = SPEC.get(name)
    if spec is None:
        return
    assert p_train / 1e6 == pytest.approx(spec["params"], rel=REL_TOL)
    assert m_train / 1e9 == pytest.approx(spec["macs"], rel=REL_TOL)
    if "deploy_params" in spec:
        assert p_infer / 1e6 == pytest.approx(spec["deploy_params"], rel=REL_TOL)
    if "deploy_macs" in spec:
        assert m_infer / 1e9 == pytest.approx(spec["deploy_macs"], rel=REL_TOL)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_small_forward_and_inference_equivalence(name: str) -> None:
    """Every variant (shrunken): a real forward/backward, the traced graph matches eager, and the
    inference form loaded with the merged weights computes the same function (fp64)."""
    kwargs, size = small_kwargs(name)
    torch.manual_seed(0)
    train = create_model(name, **kwargs).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    train.train()
    train(x).square().mean().backward()  # training mode works end to end
    assert all(p.grad is not None for p in train.parameters())

    train.eval()
    randomize_bn(train)
    with torch.no_grad():
        y = train(x)
        assert torch.isfinite(y).all()
        gm = torch.fx.symbolic_trace(train)
        torch.testing.assert_close(gm(x), y, rtol=0, atol=0)

        infer = create_model(name, inference=True, **kwargs).double().eval()
        infer.load_state_dict(deploy_state_dict(train), strict=True)
        torch.testing.assert_close(infer(x), y, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_full_size_cpu_forward(name: str) -> None:
    model = create_model(name).eval()
    size = input_size(model)
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert torch.isfinite(out).all()

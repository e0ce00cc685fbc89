"""Every zoo model through the generic engine (``reparam.deploy``), with no model-specific code:

* the deployed model computes the same function (float64, randomized BN statistics, <= 1e-9);
* inside every RepMLP block only ``fc3`` (with a bias) is left: no ``repconv*``, no BN runs there;
* its ``state_dict`` loads strictly into ``create_model(name, inference=True)`` (same kwargs),
  which then computes the same outputs, and its modules sit at the inference form's paths with
  the inference form's classes: deployed checkpoints are portable;
* the report has no skipped scopes, no roll-backs and no refusals other than the speed
  decisions of ``grouped_fc_as_bmm`` (measured at deploy time, not an exactness matter), and the
  norms it leaves are exactly those the inference form keeps;
* the input-size check survives deploy (a traceable ``torch._assert``).

Fast tests use shrunken configurations (``_small_configs``); the full-size models are ``slow``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _repmlp_oracle import randomize_bn
from _small_configs import small_kwargs
from torch import nn

import reparam
from reparam_models import create_model, list_models
from reparam_models.layers import RepMLP, RepMLPBlock

ALL_MODELS = list_models()
f64 = torch.float64
_BN = nn.modules.batchnorm._BatchNorm
_BLOCKS = (RepMLPBlock, RepMLP)
# A rule that may decline for speed (it times both implementations on this machine); every
# other refusal would mean the engine left something mergeable unmerged.
_SPEED_RULES = {"grouped_fc_as_bmm"}


def _kept_norm_reason(o) -> bool:
    """norm_into_consumers saying why a norm that no rule folds stays (a reader of the
    normalized value is not a conv / linear, e.g. the Global Perceptron's pool)."""
    return o.rule == "norm_into_consumers" and "not linear in it" in o.reason


# What a RepMLP block may still run after deploy: fc3 and the (non-linear) Global Perceptron.
_BLOCK_LAYERS = {"fc3", "gp.fc1", "gp.fc2", "fc1_fc2.fc1", "fc1_fc2.fc2"}


@dataclass
class Deployed:
    name: str
    kwargs: dict[str, Any]
    model: nn.Module
    x: torch.Tensor
    result: reparam.DeployResult


def _deploy(name: str, kwargs: dict[str, Any], size: int, batch: int = 2) -> Deployed:
    torch.manual_seed(0)
    model = randomize_bn(create_model(name, **kwargs)).to(f64).eval()
    x = torch.randn(batch, 3, size, size, dtype=f64)
    return Deployed(name, kwargs, model, x, reparam.deploy_with_report(model, x))


@functools.cache
def deployed_small(name: str) -> Deployed:
    kwargs, size = small_kwargs(name)
    return _deploy(name, kwargs, size)


def _executed(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Paths of the leaf modules that a forward on ``x`` runs."""
    ran: list[str] = []
    handles = [
        m.register_forward_hook(lambda *_, path=path: ran.append(path))
        for path, m in model.named_modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ran


def check_deployed(d: Deployed, rel: float = 1e-9) -> None:
    report, deployed = d.result.report, d.result.model
    with torch.no_grad():
        expected = d.model(d.x)
        out = deployed(d.x)
    assert reparam.relative_error(expected, out) <= rel

    # The report: nothing skipped or rolled back, no exactness refusals.
    assert report.skipped_scopes == []
    assert report.rolled_back == []
    unexpected = [(o.rule, o.site, o.reason) for o in report.refusals
                  if o.rule not in _SPEED_RULES and not _kept_norm_reason(o)]
    assert unexpected == []
    for o in report.refusals:
        assert " vs bmm " in o.reason or _kept_norm_reason(o), o.reason

    # Inside every RepMLP block only fc3 (with its bias) is left, and no BN runs there.
    blocks = [p for p, m in deployed.named_modules() if isinstance(m, _BLOCKS)]
    has_blocks = any(isinstance(m, _BLOCKS) for m in d.model.modules())
    assert bool(blocks) == has_blocks
    for path in blocks:
        block = deployed.get_submodule(path)
        assert not any(n.startswith("repconv") for n, _ in block.named_children()), path
        assert not any(isinstance(m, _BN) for m in block.modules()), path
        assert isinstance(block.fc3, nn.Conv2d) and block.fc3.bias is not None, path
    ran = _executed(deployed, d.x)
    for path in blocks:
        inside = {p[len(path) + 1:] for p in ran if p.startswith(f"{path}.")}
        layers = {p for p in inside if isinstance(deployed.get_submodule(f"{path}.{p}"),
                                                  (nn.Conv2d, nn.Linear, _BN))}
        assert "fc3" in layers and layers <= _BLOCK_LAYERS, (path, layers)

    # The inference form: same keys and shapes (strict load), same outputs, same layout.
    infer = create_model(d.name, inference=True, **d.kwargs).to(f64).eval()
    infer.load_state_dict(deployed.state_dict(), strict=True)
    with torch.no_grad():
        assert reparam.relative_error(out, infer(d.x)) <= 1e-12
    infer_modules = dict(infer.named_modules())
    for path, m in deployed.named_modules():
        assert path in infer_modules, f"deployed module {path!r} is not in the inference form"
        assert isinstance(m, type(infer_modules[path])), (path, type(m), infer_modules[path])
    for path, m in infer_modules.items():  # what the engine removed holds no state
        if path not in dict(deployed.named_modules()):
            assert not m.state_dict(), path

    # The norms left are exactly those of the inference form, and only they run.
    kept = {p for p, m in infer.named_modules() if isinstance(m, _BN)}
    assert {p for p, _ in report.unfolded_norms} == kept
    assert {p for p in ran if isinstance(deployed.get_submodule(p), _BN)} == kept


# The papers' models. The nano training configs (repmlpnet_n*) have 8x8 FCs so small that
# grouped_fc_as_bmm's timing decides between equal-cost forms at random on a busy machine;
# their deploy is checked exactly by tests/train (agreement 1.0) and test below.
PAPER_MODELS = [n for n in ALL_MODELS if not n.startswith("repmlpnet_n")]
# One model per family and block type runs in the fast suite; the others differ from it only in
# depth or resolution at the shrunken widths and run in the slow suite.
FAST_MODELS = {"repmlpnet_t224", "repmlp_res50_light_224", "repmlp_res50_bottleneck_224",
               "repmlp_face_res", "face_resnet", "resnet50"}


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow) for n in PAPER_MODELS],
)
def test_zoo_model_deploys_to_its_inference_form(name: str) -> None:
    d = deployed_small(name)
    check_deployed(d)
    fired = d.result.report.fired()
    blocks = sum(isinstance(m, _BLOCKS) for m in d.model.modules())
    assert fired.get("locality_injection", 0) == blocks


@pytest.mark.parametrize(
    ("variant", "kept_norms"),
    [(dict(num_classes=0), {"head_norm"}), (dict(features_only=True), set())],
)
def test_repmlpnet_headless_variants(variant: dict[str, Any], kept_norms: set[str]) -> None:
    """Without a Linear head there is nothing to fold ``head_norm`` into: it stays, in both."""
    kwargs, size = small_kwargs("repmlpnet_t224")
    kwargs = {**kwargs, "num_blocks": (1, 1, 1, 1), **variant}
    d = _deploy("repmlpnet_t224", kwargs, size)
    check_deployed(d)
    top = {p for p, _ in d.result.report.unfolded_norms if "." not in p}
    assert top == kept_norms


def test_deploy_without_example_inputs_uses_pretrained_cfg() -> None:
    kwargs, size = small_kwargs("repmlpnet_t224")
    kwargs = {**kwargs, "num_blocks": (1, 1, 1, 1)}
    torch.manual_seed(0)
    model = randomize_bn(create_model("repmlpnet_t224", **kwargs)).eval()
    result = reparam.deploy_with_report(model)
    assert any("pretrained_cfg" in n for n in result.report.notes)
    assert result.report.fired().get("locality_injection") == 4
    infer = create_model("repmlpnet_t224", inference=True, **kwargs).eval()
    infer.load_state_dict(result.model.state_dict(), strict=True)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert reparam.relative_error(model(x), infer(x)) <= 1e-5


def test_deployed_model_keeps_the_input_size_check() -> None:
    """The eager ValueError does not survive tracing; the torch._assert does, so a deployed
    model still fails with a message naming the block, not with a raw reshape error."""
    net = deployed_small("repmlpnet_t224").result.model  # stage-0 partitions of 8x8
    with pytest.raises(AssertionError, match=r"stages\.0\.0\.repmlp_block: .* 8x8 partitions"):
        net(torch.randn(1, 3, 40, 40, dtype=f64))
    v1 = deployed_small("repmlp_res50_light_224").result.model  # built for 64x64 inputs
    with pytest.raises(AssertionError, match=r"stages\.1\.1\.light_repmlp: .*fixed 8x8"):
        v1(torch.randn(1, 3, 96, 96, dtype=f64))
    # A multiple of the design resolution (several partitions per map) still works.
    with torch.no_grad():
        big = torch.randn(1, 3, 64, 64, dtype=f64)
        d = deployed_small("repmlpnet_t224")
        assert reparam.relative_error(d.model(big), net(big)) <= 1e-9


def test_deployed_forward_head_still_works() -> None:
    """``forward_head`` is a method the engine does not rewrite; it copes with the deleted
    (folded) ``head_norm`` and gives the same logits as the inference form."""
    d = deployed_small("repmlpnet_t224")
    feats = d.result.model.forward_features(d.x)
    with torch.no_grad():
        logits = d.result.model.forward_head(feats[-1])
        assert reparam.relative_error(d.model(d.x), logits) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_full_size_zoo_model_deploys_to_its_inference_form(name: str) -> None:
    with torch.device("meta"):
        size = int(create_model(name).pretrained_cfg["input_size"][-1])
    d = _deploy(name, {}, size, batch=1)
    check_deployed(d)

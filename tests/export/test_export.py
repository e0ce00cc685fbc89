"""Deployed models leave PyTorch intact: ``torch.export``, ONNX (checked in onnxruntime) and
``torch.compile`` all reproduce them.

Two deployed models: the built-in demo and a small RepVGG-style net (a stride-2 block without
identity, then identity blocks). Both are deployed once, on the CPU, with small inputs.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

import reparam
from reparam.demo import RepVGGStyleBlock, demo_model, randomize_batch_norms
from reparam.export import check_onnx, export_onnx, onnx_exporter

TOL = 1e-5  # float32 relative tolerance
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Deploys and exports are many tiny ops: on a busy machine one thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout))


class Downsample(nn.Module):
    """RepVGG's stride-2 block: 3×3 and 1×1 conv-BN branches, no identity."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dense = _conv_bn(cin, cout, 3, 2)
        self.pointwise = _conv_bn(cin, cout, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(x) + self.pointwise(x))


class TinyRepVGG(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stage = nn.Sequential(Downsample(3, width), RepVGGStyleBlock(width),
                                   Downsample(width, 2 * width), RepVGGStyleBlock(2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stage(x), 1), 1))


def _demo():
    model, _ = demo_model()
    return model, torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def _repvgg():
    torch.manual_seed(0)
    model = randomize_batch_norms(TinyRepVGG(), seed=2).eval()
    return model, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))


BUILDERS = {"demo": _demo, "repvgg": _repvgg}
_CACHE: dict[str, tuple[nn.Module, nn.Module, torch.Tensor]] = {}


def _deployed(name: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(original, deployed, input), deployed once per session on the CPU."""
    if name not in _CACHE:
        model, x = BUILDERS[name]()
        result = reparam.deploy_with_report(model, x)
        assert result.report.fired()["parallel_branches"] >= 2
        _CACHE[name] = (model, result.model, x)
    return _CACHE[name]


def _on(device: torch.device, name: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    model, deployed, x = _deployed(name)
    return (copy.deepcopy(model).to(device), copy.deepcopy(deployed).to(device), x.to(device))


def _assert_matches(reference: nn.Module, candidate, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, got = reference(x), candidate(x)
    assert got.device == expected.device
    assert reparam.relative_error(expected, got) <= TOL


# -------------------------------------------------------------------------- torch.export


@pytest.mark.parametrize("name", list(BUILDERS))
def test_torch_export(name, device):
    model, deployed, x = _on(device, name)
    program = torch.export.export(deployed, (x,))
    exported = program.module()
    _assert_matches(deployed, exported, x)
    _assert_matches(model, exported, x)
    # the exported graph holds no batch norm: every one was folded
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("batch_norm" in op for op in ops), ops


# -------------------------------------------------------------------------- ONNX


@needs_ort
@pytest.mark.parametrize("name, dynamo", [
    pytest.param("demo", True, id="demo-dynamo"),
    pytest.param("repvgg", True, id="repvgg-dynamo"),
    pytest.param("repvgg", False, id="repvgg-torchscript"),
])
def test_onnx_matches_in_onnxruntime(name, dynamo, tmp_path):
    if dynamo and not HAS_ONNXSCRIPT:
        pytest.skip("the dynamo exporter needs onnxscript")
    model, deployed, x = _deployed(name)
    path = export_onnx(deployed, x, tmp_path / f"{name}.onnx", dynamo=dynamo)
    assert path.is_file() and not (tmp_path / f"{name}.onnx.data").exists()
    assert check_onnx(path, deployed, x) <= TOL
    assert check_onnx(path, model, x) <= TOL  # against the train-form model too
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops


@needs_ort
@pytest.mark.parametrize("dynamo", [
    pytest.param(True, id="dynamo",
                 marks=pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="needs onnxscript")),
    pytest.param(False, id="torchscript"),
])
def test_onnx_dynamic_batch(dynamo, tmp_path):
    _, deployed, x = _deployed("repvgg")
    path = export_onnx(deployed, x, tmp_path / "dyn.onnx", dynamo=dynamo, dynamic_batch=True)
    for batch in (1, 3):
        xb = torch.randn(batch, *x.shape[1:])
        assert check_onnx(path, deployed, xb) <= TOL


@needs_ort
def test_check_onnx_catches_a_different_model(tmp_path):
    _, deployed, x = _deployed("repvgg")
    path = export_onnx(deployed, x, tmp_path / "m.onnx", dynamo=False)
    other = copy.deepcopy(deployed)
    with torch.no_grad():
        other.head.bias.add_(1.0)
    with pytest.raises(reparam.NotEquivalentError, match="relative error"):
        check_onnx(path, other, x)


def test_export_onnx_keeps_the_model_mode_and_needs_tensors(tmp_path):
    _, deployed, x = _deployed("repvgg")
    model = copy.deepcopy(deployed).train()
    with pytest.raises(reparam.ReparamError, match="example inputs"):
        export_onnx(model, (), tmp_path / "none.onnx")
    assert model.training
    assert onnx_exporter(True) == "dynamo" and onnx_exporter(False) == "torchscript"


# -------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", list(BUILDERS))
def test_torch_compile_traces_in_one_graph(name, device):
    """Dynamo captures the generated forward whole (no graph breaks); no C++ compiler needed."""
    _, deployed, x = _on(device, name)
    torch._dynamo.reset()
    compiled = torch.compile(deployed, backend="aot_eager", fullgraph=True)
    _assert_matches(deployed, compiled, x)


@pytest.mark.slow  # inductor compiles C++ (CPU) or Triton (CUDA) kernels: > 60 s cold here
@pytest.mark.parametrize("name", list(BUILDERS))
def test_torch_compile_inductor(name, device):
    model, deployed, x = _on(device, name)
    torch._dynamo.reset()
    compiled = torch.compile(deployed)
    _assert_matches(deployed, compiled, x)
    _assert_matches(model, compiled, x)

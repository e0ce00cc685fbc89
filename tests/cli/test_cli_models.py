"""Which models the command line reaches: saved models next to their module, timm names,
factory keyword arguments — and ``reparam.cli.loading`` as a library."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from torch import nn

from reparam.cli import EXIT_OK, EXIT_USAGE, main
from reparam.cli.loading import ModelLoadError, load_model, parse_model_kwargs
from reparam.demo import RepVGGStyleBlock

HAS_TIMM = importlib.util.find_spec("timm") is not None
FACTORIES = "reparam_cli_kwargs_factories"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Sized(nn.Module):
    pretrained_cfg = {"input_size": (3, 8, 8)}

    def __init__(self, width: int = 4, num_classes: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.block = RepVGGStyleBlock(width)
        self.head = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


@pytest.fixture
def factories(monkeypatch):
    module = types.ModuleType(FACTORIES)
    module.sized = Sized
    module.instance = Sized()
    monkeypatch.setitem(sys.modules, FACTORIES, module)
    return FACTORIES


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------- model kwargs


def test_model_kwargs_are_typed():
    text = (
        "num_classes=10,drop_rate=0.1,flag=true,off=False,nothing=none,pool=avg,"
        "name='a,b',size=(3, 4),neg=-2,mixed=avg-max,eps=1e-5,act=nn.ReLU"
    )
    assert parse_model_kwargs(text) == {
        "num_classes": 10,
        "drop_rate": 0.1,
        "flag": True,
        "off": False,
        "nothing": None,
        "pool": "avg",
        "name": "a,b",
        "size": (3, 4),
        "neg": -2,
        "mixed": "avg-max",
        "eps": 1e-5,
        "act": "nn.ReLU",
    }
    assert type(parse_model_kwargs("n=10")["n"]) is int
    assert type(parse_model_kwargs("r=1.0")["r"]) is float
    assert parse_model_kwargs("") == {}


@pytest.mark.parametrize("bad", ["num_classes", "=3", "a=1,,b=2", "10", "a=(1,"])
def test_model_kwargs_that_are_not_key_value_pairs(bad):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model_kwargs(bad)


def test_factory_model_kwargs_from_the_cli(capsys, factories, tmp_path):
    out_file = tmp_path / "sized.pt"
    code, out, err = _run(capsys, "deploy", f"{factories}:sized", "--model-kwargs",
                          "width=6,num_classes=5,bias=false", "-o", str(out_file), "--json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["params_before"] == sum(p.numel() for p in Sized(6, 5, False).parameters())
    deployed = torch.load(out_file, weights_only=False)
    assert deployed.head.out_features == 5 and deployed.head.bias is None
    assert deployed(torch.randn(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["deploy", "--model-kwargs", "num_classes"], ["--model-kwargs", "KEY=VALUE"]),
        (["deploy", "--model-kwargs", "num_classes=3"], ["--model-kwargs needs MODEL"]),
        (["deploy", "{f}:sized", "--model-kwargs", "depth=3"], ["failed to build", "depth"]),
        (["deploy", "{f}:instance", "--model-kwargs", "width=3"], ["not a factory"]),
        (["deploy", "{d}/saved.pt", "--model-kwargs", "width=3"], ["saved model",
                                                                   "--model-kwargs"]),
    ],
)
def test_bad_model_kwargs_exit_2(argv, fragments, capsys, factories, tmp_path):
    torch.save(Sized(), tmp_path / "saved.pt")
    code, out, err = _run(capsys, *(a.format(f=factories, d=tmp_path) for a in argv))
    assert code == EXIT_USAGE and out == ""
    assert "error:" in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_zoo_model_kwargs_through_the_library():
    with torch.device("meta"):
        loaded = load_model("repmlpnet_t224", model_kwargs={"num_classes": 10})
    heads = [m for m in loaded.model.modules() if isinstance(m, nn.Linear)]
    assert heads[-1].out_features == 10
    assert loaded.name == "repmlpnet_t224"
    with pytest.raises(ModelLoadError, match="did you mean repmlpnet_t224"):
        load_model("repmlpnet_t22")


# ---------------------------------------------------------------------------- timm


@pytest.mark.timm
@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
def test_timm_model_by_name_with_kwargs(capsys, tmp_path):
    out_file = tmp_path / "byob.pt"
    code, out, err = _run(capsys, "deploy", "timm/test_byobnet", "--model-kwargs",
                          "num_classes=10", "--input-shape", "1,3,32,32", "-o", str(out_file),
                          "--json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["model"] == "timm/test_byobnet"
    assert doc["fired"]["conv_norm"] >= 1
    assert doc["max_relative_error"] <= 1e-5
    deployed = torch.load(out_file, weights_only=False)
    assert deployed(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.timm
@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["deploy", "timm/test_byobnett"],
         ["unknown timm model", "did you mean timm/test_byobnet"]),
        (["deploy", "timm/test_byobnet", "--model-kwargs", "pretrained=true"],
         ["without downloading"]),
        (["explain", "{d}/state.pt", "--model", "timm/test_byobnet"], ["does not fit"]),
    ],
)
def test_timm_bad_input_exits_2(argv, fragments, capsys, tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state.pt")
    code, out, err = _run(capsys, *(a.format(d=tmp_path) for a in argv))
    assert code == EXIT_USAGE and out == ""
    line = _error_line(err)
    for fragment in fragments:
        assert fragment in line


# ---------------------------------------------------------------------------- saved models


MODULE_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class MyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))
    """
)


def test_saved_model_loads_in_the_folder_of_its_module(tmp_path, monkeypatch):
    """``reparam deploy my_model.pt`` run where ``my_model``'s module is, as the installed
    ``reparam`` script runs: ``python -P`` keeps the current folder off ``sys.path``, so only
    the command line itself can put it there."""
    (tmp_path / "my_models_for_cli_test.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("my_models_for_cli_test")
    torch.save(module.MyNet().eval(), tmp_path / "my_model.pt")
    monkeypatch.delitem(sys.modules, "my_models_for_cli_test")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "reparam", "deploy", "my_model.pt", "--input-shape",
         "1,3,6,6", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] == "my_model.pt" and doc["fired"] == {"conv_norm": 1}
    assert doc["max_relative_error"] <= 1e-5


def test_timm_name_without_timm_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ModelLoadError, match="needs timm, which is not installed"):
        load_model("timm/repvit_m0_9")


def test_checkpoint_into_an_architecture_built_with_kwargs(capsys, factories, tmp_path):
    original = Sized(width=6, num_classes=3).eval()
    ckpt = tmp_path / "sized6.pth"
    torch.save(original.state_dict(), ckpt)
    out_file = tmp_path / "out.pt"
    code, out, err = _run(capsys, "deploy", str(ckpt), "--model", f"{factories}:sized",
                          "--model-kwargs", "width=6,num_classes=3", "-o", str(out_file),
                          "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["model"] == f"{factories}:sized ({ckpt})"
    x = torch.randn(2, 3, 8, 8)
    deployed = torch.load(out_file, weights_only=False)
    assert (deployed(x) - original(x)).abs().max() <= 1e-5 * original(x).abs().max()

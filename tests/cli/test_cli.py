"""The ``reparam`` command line: exit codes, one-line errors, JSON on stdout, saved models.

Everything runs in-process through ``reparam.cli.main`` except one real ``python -m reparam``
subprocess. Deploys use 8×8 inputs where the test is about the command line, not the model.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn
from torch.fx import Node

import reparam
from reparam.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from reparam.demo import DemoNet, RepVGGStyleBlock, demo_model, randomize_batch_norms
from reparam.export import onnx_exporter, onnxruntime_available

FACTORIES = "reparam_cli_test_factories"
SMALL = ["--input-shape", "1,3,8,8"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Deploys are many tiny ops: on a busy machine one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyCfgNet(nn.Module):
    """A RepVGG-style net that, like timm and reparam_models, says its input size."""

    pretrained_cfg = {"input_size": (3, 8, 8)}

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = RepVGGStyleBlock(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class Negate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.conv(x)


class DropNegation(reparam.Rule):
    """A wrong rule (-x becomes x): deploy's float64 check must catch it."""

    name = "drop_negation_for_cli_test"
    summary = "-x is x (wrong on purpose)"
    pattern = "neg(x)"

    def match(self, node: Node, ctx: reparam.RuleContext):
        return node if node.target is operator.neg else None

    def check(self, node: Node, ctx: reparam.RuleContext):
        return node

    def rewrite(self, node: Node, ctx: reparam.RuleContext) -> reparam.Rewrite:
        node.replace_all_uses_with(node.args[0])
        ctx.erase_unused([node])
        return reparam.Rewrite(self.name, ctx.site_name(node), "dropped a negation")


def _raise() -> nn.Module:
    raise RuntimeError("no weights for you\nsecond line")


@pytest.fixture
def factories(monkeypatch):
    """An importable module of model factories: ``reparam_cli_test_factories:NAME``."""
    module = types.ModuleType(FACTORIES)
    module.tiny = TinyCfgNet
    module.negate = Negate
    module.not_a_model = lambda: 42
    module.broken = _raise
    monkeypatch.setitem(sys.modules, FACTORIES, module)
    return FACTORIES


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    """The error output is exactly one line, without a traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------- success


def test_default_deploy_saves_a_model_equal_to_the_original(capsys, tmp_path):
    out_file = tmp_path / "deployed.pt"
    code, out, err = _run(capsys, "deploy", "-o", str(out_file))
    assert code == EXIT_OK, err
    assert "reparam deploy" in out and "rules fired" in out and "parallel_branches" in out
    assert str(out_file) in out
    loaded = torch.load(out_file, weights_only=False)
    original, x = demo_model()
    assert isinstance(loaded, DemoNet)
    assert reparam.relative_error(original(x), loaded(x)) <= 1e-5
    assert sum(p.numel() for p in loaded.parameters()) < sum(
        p.numel() for p in original.parameters())


def test_deploy_json_is_the_only_stdout(capsys):
    code, out, err = _run(capsys, "deploy", "--json", *SMALL)
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["input_shapes"] == [[1, 3, 8, 8]]
    assert doc["input_source"] == "--input-shape"
    assert doc["fired"]["parallel_branches"] == 4
    assert doc["params_after"] < doc["params_before"]
    assert doc["max_relative_error"] <= 1e-5


def test_deploy_state_dict_with_model_option(capsys, tmp_path):
    original = randomize_batch_norms(DemoNet(), seed=3).eval()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": original.state_dict(), "epoch": 7}, ckpt)
    out_file = tmp_path / "out.pt"
    code, out, err = _run(capsys, "deploy", str(ckpt), "--model", "reparam.demo:DemoNet",
                          *SMALL, "-o", str(out_file), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["output"] == str(out_file)
    x = torch.randn(2, 3, 8, 8)
    assert reparam.relative_error(original(x), torch.load(out_file, weights_only=False)(x)) \
        <= 1e-5


def test_deploy_saved_model_file(capsys, tmp_path):
    model = TinyCfgNet().eval()
    path = tmp_path / "tiny.pt"
    torch.save(model, path)
    code, out, err = _run(capsys, "deploy", str(path), "--json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["model"] == str(path)
    assert doc["fired"]["parallel_branches"] == 1


def test_default_input_from_pretrained_cfg(capsys, factories):
    code, out, err = _run(capsys, "explain", f"{factories}:tiny", "--json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["input_shapes"] == [[1, 3, 8, 8]]
    assert doc["input_source"] == "pretrained_cfg['input_size']"
    fired = {s["rule"] for s in doc["sites"] if s["fired"]}
    assert {"conv_norm", "parallel_branches"} <= fired


@pytest.mark.skipif(
    not (onnxruntime_available() and onnx_exporter() == "dynamo"),
    reason="needs onnxruntime and onnxscript",
)
def test_deploy_onnx_option(capsys, tmp_path, factories):
    path = tmp_path / "tiny.onnx"
    code, out, err = _run(capsys, "deploy", f"{factories}:tiny", "--onnx", str(path), "--json")
    assert code == EXIT_OK, err
    info = json.loads(out)["onnx"]
    assert path.is_file() and info["checked"] and info["max_relative_error"] <= 1e-5
    assert info["exporter"] == "dynamo"


def test_explain_human_output(capsys):
    code, out, err = _run(capsys, "explain", *SMALL)
    assert code == EXIT_OK, err
    assert "merged" in out and "stages.0" in out and "norm_linear" in out


def test_bench_json(capsys, factories):
    code, out, err = _run(capsys, "bench", f"{factories}:tiny", "--json", "-n", "3", "-w", "1",
                          "-b", "2", "--device", "cpu")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["batch_size"] == 2 and doc["input_shapes"] == [[2, 3, 8, 8]]
    for form in ("train", "deployed"):
        assert len(doc[form]["times_ms"]) == 3
        assert doc[form]["median_ms"] > 0
    assert doc["speedup"] == pytest.approx(doc["train"]["median_ms"]
                                           / doc["deployed"]["median_ms"])
    assert doc["deployed"]["params"] < doc["train"]["params"]
    assert doc["max_relative_error"] <= 1e-5


def test_bench_table(capsys, factories):
    code, out, err = _run(capsys, "bench", f"{factories}:tiny", "-n", "2", "-w", "0")
    assert code == EXIT_OK, err
    assert "train-form" in out and "deployed" in out and "×" in out


def test_rules_and_models(capsys):
    code, out, _ = _run(capsys, "rules", "--json")
    assert code == EXIT_OK
    assert [r["name"] for r in json.loads(out)] == [r.name for r in reparam.list_rules()]
    code, out, _ = _run(capsys, "rules")
    assert code == EXIT_OK and "parallel_branches" in out
    code, out, _ = _run(capsys, "models", "resnet*", "--json")
    assert code == EXIT_OK
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["resnet50"]
    assert rows[0]["params"] == 25_557_032 and rows[0]["input_size"] == [3, 224, 224]
    code, out, _ = _run(capsys, "models")
    assert code == EXIT_OK and "repmlpnet_t224" in out


def test_help_and_version(capsys):
    assert main(["--help"]) == EXIT_OK
    assert "deploy" in capsys.readouterr().out
    assert main(["--version"]) == EXIT_OK
    assert reparam.__version__ in capsys.readouterr().out


def test_python_dash_m_subprocess_on_the_demo(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "reparam", "deploy", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == EXIT_OK, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"].startswith("built-in demo")
    assert doc["input_shapes"] == [[1, 3, 32, 32]]
    assert doc["fired"]["parallel_branches"] == 4 and doc["fired"]["norm_linear"] == 1
    assert doc["params_after"] < doc["params_before"]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- failures


@pytest.fixture
def bad_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    state = tmp_path / "state.pt"
    torch.save(DemoNet().state_dict(), state)
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(2)}, wrong)
    return tmp_path


BAD_INPUTS = {
    "missing path": (["deploy", "{d}/nope.pt"], ["no such file", "nope.pt"]),
    "missing checkpoint with --model": (["deploy", "{d}/nope.pt", "--model", "resnet50"],
                                        ["no such file", "nope.pt"]),
    "folder": (["deploy", "{d}"], ["is a folder"]),
    "unloadable file": (["deploy", "{d}/garbage.pt"], ["cannot load", "garbage.pt"]),
    "not an nn.Module": (["deploy", "{d}/tensor.pt"], ["tensor.pt", "Tensor",
                                                       "not a torch.nn.Module"]),
    "state_dict without --model": (["explain", "{d}/state.pt"], ["state.pt", "state_dict",
                                                                "--model"]),
    "state_dict not fitting --model": (["deploy", "{d}/wrong.pt", "--model",
                                        "reparam.demo:DemoNet"], ["wrong.pt", "does not fit",
                                                                  "missing keys"]),
    "unknown zoo name": (["deploy", "repmlpnet_t22"], ["unknown model", "repmlpnet_t22",
                                                       "did you mean repmlpnet_t224"]),
    "unknown --model": (["deploy", "{d}/state.pt", "--model", "nonet"], ["--model", "nonet"]),
    "module not importable": (["bench", "no_such_pkg_xyz.mod:build"], ["cannot import",
                                                                       "no_such_pkg_xyz"]),
    "factory attribute missing": (["deploy", "reparam.demo:NoSuchNet"], ["NoSuchNet"]),
    "factory returns a non-module": (["deploy", f"{FACTORIES}:not_a_model"], ["int",
                                     "not a torch.nn.Module"]),
    "factory raises": (["deploy", f"{FACTORIES}:broken"], ["failed to build",
                                                           "no weights for you"]),
    "input shape the model rejects": (["deploy", "--input-shape", "1,5,8,8"],
                                      ["does not run on input", "(1, 5, 8, 8)"]),
    "output folder missing": (["deploy", "-o", "{d}/no/such/dir/x.pt"], ["does not exist"]),
    "onnx folder missing": (["deploy", "--onnx", "{d}/no/x.onnx"], ["--onnx", "does not exist"]),
    "unknown rule": (["deploy", "--rules", "conv_norm,bogus"], ["bogus", "unknown rule"]),
    "onnx without an input": (["deploy", f"{FACTORIES}:negate", "--onnx", "{d}/n.onnx"],
                              ["--onnx needs an example input", "--input-shape"]),
    "bench without an input": (["bench", f"{FACTORIES}:negate"], ["--input-shape"]),
    "bench on a device that is not there": (["bench", "--device", "nodevice"], ["nodevice"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, capsys, bad_files, factories):
    argv, fragments = BAD_INPUTS[case]
    code, out, err = _run(capsys, *(a.format(d=bad_files) for a in argv))
    assert code == EXIT_USAGE
    line = _error_line(err)
    assert line.startswith("reparam: error: ")
    for fragment in fragments:
        assert fragment.format(d=bad_files) in line
    assert out == ""


@pytest.mark.parametrize("argv", [
    ["deploy", "--input-shape", "1,x,3"],
    ["deploy", "--input-shape", "0,3"],
    ["bench", "--runs", "0"],
    ["frobnicate"],
    [],
])
def test_bad_arguments_exit_2(argv, capsys):
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert "error:" in err and "Traceback" not in err and out == ""


def test_json_errors_are_json_too(capsys, bad_files):
    code, out, err = _run(capsys, "deploy", str(bad_files / "tensor.pt"), "--json")
    assert code == EXIT_USAGE
    assert json.loads(out) == {"error": _error_line(err).removeprefix("reparam: error: "),
                               "exit_code": EXIT_USAGE}


def test_inexact_deploy_exits_1(capsys, factories):
    rule = reparam.register_rule(DropNegation)
    try:
        code, out, err = _run(capsys, "deploy", f"{factories}:negate", "--input-shape",
                              "1,2,3,3", "--rules", rule.name)
    finally:
        reparam.unregister_rule(rule.name)
    assert code == EXIT_FAILED
    line = _error_line(err)
    assert "deploy of" in line and "differs from the original" in line
    assert out == ""

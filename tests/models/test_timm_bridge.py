"""reparam_models.timm_bridge: the zoo reachable through ``timm.create_model``.

In-process tests use the meta device or a shrunk RepMLPNet; the two import-order cases that
depend on a fresh interpreter (timm imported after ``reparam_models``, and timm missing) run
in subprocesses started together.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

import reparam_models  # noqa: E402
from reparam_models import RepMLPNet, RepMLPResNet  # noqa: E402
from reparam_models.timm_bridge import (  # noqa: E402
    TimmBridgeWarning,
    register_timm_models,
    timm_model_names,
)

pytestmark = pytest.mark.timm

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(
    channels=(8, 16, 32, 64),
    num_blocks=(1, 1, 1, 1),
    hs=(8, 4, 2, 1),
    num_sharesets=(1, 2, 4, 8),
    img_size=32,
)

# timm imported after reparam_models: registration happens when timm finishes loading.
_LATE_TIMM = """
import sys
import reparam_models
assert "timm" not in sys.modules, "import reparam_models must not import timm"
import timm
assert timm.is_model("repmlpnet_b224")
print(type(timm.create_model("repmlpnet_b224", device="meta")).__name__)
"""

# timm not importable: reparam_models imports, and registering is a no-op.
_NO_TIMM = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import reparam_models
from reparam_models import timm_bridge
assert timm_bridge.register_timm_models() == []
assert timm_bridge.timm_model_names() == []
model = reparam_models.create_model("repmlpnet_t224", channels=(8, 16, 32, 64), hs=(8, 4, 2, 1),
                                    num_blocks=(1, 1, 1, 1), num_sharesets=(1, 2, 4, 8))
assert type(model).__name__ == "RepMLPNet"
print("ok")
"""


_SCRIPTS = {
    "test_registered_when_timm_is_imported_later": _LATE_TIMM,
    "test_import_without_timm": _NO_TIMM,
}


@pytest.fixture(scope="module", autouse=True)
def subprocesses(request: pytest.FixtureRequest):
    """Start the selected fresh-interpreter cases at once, before the in-process tests run."""
    selected = {item.name for item in request.session.items} & set(_SCRIPTS)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_SCRIPTS[name])],
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in sorted(selected)
    }
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()


def _result(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip()


def test_create_model_returns_our_class() -> None:
    model = timm.create_model("repmlpnet_t224", pretrained=False, device="meta")
    assert type(model) is RepMLPNet
    assert model.pretrained_cfg["architecture"] == "repmlpnet_t224"
    assert next(model.parameters()).device.type == "meta"
    res = timm.create_model("repmlp_res50_light_224", pretrained=False, device="meta")
    assert type(res) is RepMLPResNet


def test_list_models_lists_ours() -> None:
    ours = set(reparam_models.list_models("repmlp*"))
    assert ours and set(timm.list_models("repmlp*")) == ours
    assert set(timm.list_models(module="timm_bridge")) == set(timm_model_names())
    assert not timm.list_models("repmlp*", pretrained=True)  # no hosted weights


def test_forward_and_kwargs_on_small_model() -> None:
    torch.manual_seed(0)
    model = timm.create_model("repmlpnet_t224", pretrained=False, num_classes=7, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    # the same model, built by our own factory with the same seed, computes the same thing
    torch.manual_seed(0)
    ref = reparam_models.create_model("repmlpnet_t224", num_classes=7, **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(x), out)
    feats = timm.create_model("repmlpnet_t224", features_only=True, **TINY).eval()
    with torch.no_grad():
        maps = feats(x)
    assert [m.shape[1] for m in maps] == list(TINY["channels"])
    deployed = timm.create_model("repmlpnet_t224", inference=True, **TINY)
    assert deployed.inference
    f64 = timm.create_model("repmlpnet_t224", dtype=torch.float64, **TINY)
    assert next(f64.parameters()).dtype == torch.float64


def test_pretrained_needs_a_local_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("repmlpnet_t224", pretrained=True, **TINY)
    src = timm.create_model("repmlpnet_t224", num_classes=5, **TINY)
    path = tmp_path / "tiny.pth"
    torch.save(src.state_dict(), path)
    loaded = timm.create_model(
        "repmlpnet_t224",
        pretrained=True,
        num_classes=5,
        pretrained_cfg_overlay=dict(file=str(path), note="mine"),
        **TINY,
    )
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert loaded.pretrained_cfg["note"] == "mine"


def test_timm_names_are_not_taken_over() -> None:
    assert "resnet50" in reparam_models.list_models()
    assert "resnet50" not in timm_model_names()
    assert type(timm.create_model("resnet50", device="meta")).__module__ == "timm.models.resnet"
    with pytest.warns(TimmBridgeWarning, match="resnet50"):
        assert register_timm_models(["resnet50"]) == []


def test_registration_is_idempotent() -> None:
    before = timm.list_models("repmlp*")
    assert register_timm_models(["repmlpnet_t224", "repmlpnet_b224"]) == []
    assert timm.list_models("repmlp*") == before
    with pytest.raises(ValueError, match="not reparam_models names"):
        register_timm_models(["no_such_model"])


def test_registered_when_timm_is_imported_later(subprocesses) -> None:
    assert _result(subprocesses["test_registered_when_timm_is_imported_later"]) == "RepMLPNet"


def test_import_without_timm(subprocesses) -> None:
    assert _result(subprocesses["test_import_without_timm"]) == "ok"

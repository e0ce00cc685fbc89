"""timm's model API on every zoo model: ``pretrained_cfg`` / ``default_cfg``, ``reset_classifier``,
``get_classifier``, ``global_pool``, ``features_only`` with ``out_indices``, grad checkpointing,
``pretrained=True`` with local weights only, ``reparameterize()`` (also through timm's
``reparameterize_model``), registration with timm without warnings, and the package's import
graph (no cycles).

Full-size models are built on the meta device; real forwards use the shrunken configurations of
``_small_configs`` (RepMLPNet with one unit per stage).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from _small_configs import small_kwargs
from torch import nn

import reparam
import reparam_models
from reparam.errors import ReparamError
from reparam.testing import randomize_norms
from reparam_models import (
    PretrainedWeightsError,
    create_model,
    get_pretrained_cfg,
    list_models,
    set_pretrained_file,
)
from reparam_models.registry import WEIGHTS_ENV

ROOT = Path(__file__).resolve().parents[2]
ALL_MODELS = list_models()
F64 = torch.float64
CFG_KEYS = {"mean", "std", "crop_pct", "interpolation", "first_conv", "classifier",
            "input_size", "num_classes", "architecture", "file"}


def small(name: str, **extra: Any) -> tuple[dict[str, Any], int]:
    kwargs, size = small_kwargs(name)
    if name.startswith("repmlpnet_"):
        kwargs = {**kwargs, "num_blocks": (1, 1, 1, 1)}
    return {**kwargs, **extra}, size


def build_small(name: str, seed: int = 0, **extra: Any) -> tuple[nn.Module, torch.Tensor]:
    kwargs, size = small(name, **extra)
    torch.manual_seed(seed)
    model = create_model(name, **kwargs).to(F64).eval()
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    x = torch.randn(2, 3, size, size, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return model, x


TWO_STAGES = dict(channels=(8, 16), num_blocks=(1, 1), hs=(8, 4), num_sharesets=(1, 2),
                  img_size=32, num_classes=5)


def _two_stage_net(inference: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("repmlpnet_t224", inference=inference, **TWO_STAGES).to(F64).eval()
    randomize_norms(model, torch.Generator().manual_seed(3))
    return model


# ------------------------------------------------------------------------------ pretrained_cfg


@pytest.mark.parametrize("name", ALL_MODELS)
def test_pretrained_cfg(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, **small(name)[0])
    cfg = model.pretrained_cfg
    assert CFG_KEYS <= set(cfg), CFG_KEYS - set(cfg)
    assert model.default_cfg is cfg
    assert cfg["architecture"] == name and cfg["file"] is None
    assert cfg["input_size"] == (3, small(name)[1], small(name)[1])
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0] == 3
    assert all(s > 0 for s in cfg["std"]) and 0 < cfg["crop_pct"] <= 1
    assert cfg["interpolation"] in ("bilinear", "bicubic")
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == cfg["input_size"][0]
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    # the registry's copy describes the same variant, and is a copy
    registered = get_pretrained_cfg(name)
    assert {k: registered[k] for k in ("mean", "std", "first_conv", "classifier")} == {
        k: cfg[k] for k in ("mean", "std", "first_conv", "classifier")}
    registered["mean"] = None
    assert get_pretrained_cfg(name)["mean"] is not None


def test_pretrained_cfg_follows_the_instance() -> None:
    with torch.device("meta"):
        model = create_model("repmlpnet_t224", num_classes=10, in_chans=1, img_size=448,
                             hs=(112, 56, 28, 14),
                             pretrained_cfg_overlay=dict(mean=(0.5,), std=(0.5,)))
    cfg = model.pretrained_cfg
    assert cfg["num_classes"] == 10 and cfg["input_size"] == (1, 448, 448)
    assert cfg["mean"] == (0.5,) and cfg["std"] == (0.5,)


# ------------------------------------------------------------------------------ classifier


def build_fast(name: str, **extra: Any) -> tuple[nn.Module, torch.Tensor]:
    """The shrunken ``name`` in float32 and an input (for shape checks; the meta device would
    be slower: its per-op dispatch costs more than these tiny CPU ops)."""
    kwargs, size = small(name, **extra)
    return create_model(name, **kwargs).eval(), torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_and_get_classifier(name: str) -> None:
    model, x = build_fast(name)
    head = model.get_classifier()
    model.reset_classifier(7)
    new = model.get_classifier()
    assert new is not head and model.num_classes == 7
    assert model.pretrained_cfg["num_classes"] == 7
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        out = model(x)
        feats = model.forward_features(x)
    last = feats[-1] if isinstance(feats, list) else feats
    if model.global_pool == "avg":
        assert out.shape == (2, model.num_features)
    else:  # face models: no pooling, the flattened map (normalised)
        assert model.global_pool == "" and out.shape == (2, last[0].numel())


def test_reset_classifier_keeps_dtype_and_trains() -> None:
    model, x = build_small("face_resnet")
    model.reset_classifier(6)
    assert all(p.dtype == F64 for p in model.get_classifier().parameters())
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, dtype=F64))


@pytest.mark.parametrize("name", ["repmlpnet_t224", "repmlp_res50_light_224"])
def test_global_pool(name: str) -> None:
    model, x = build_small(name)
    model.reset_classifier(0, global_pool="max")
    assert model.global_pool == "max"
    with torch.no_grad():
        last = model.forward_features(x)[-1]
        normed = model.head_norm(last) if hasattr(model, "head_norm") else last
        torch.testing.assert_close(model(x), normed.amax(dim=(2, 3)), rtol=0, atol=0)
        model.reset_classifier(0, global_pool="")
        torch.testing.assert_close(model(x), normed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(5, global_pool="")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(5, global_pool="avgmax")
    with pytest.raises(ValueError, match="global_pool='avg'"):
        create_model("repmlpnet_t224", inference=True, global_pool="max",
                     **small("repmlpnet_t224")[0])


def test_face_has_no_pool_to_choose() -> None:
    model, _ = build_small("face_resnet")
    with pytest.raises(ValueError, match="global_pool must be ''"):
        model.reset_classifier(8, global_pool="avg")


# ------------------------------------------------------------------------------ features_only


ONE_PER_FAMILY = ["repmlpnet_t224", "repmlp_res50_light_224", "repmlp_face_res"]
FEATURE_CASES = [(name, (1, -1)) for name in ALL_MODELS] + [
    (name, idx) for name in ONE_PER_FAMILY for idx in [(0, 1, 2, 3), (0, 2)]]


@pytest.mark.parametrize(("name", "out_indices"), FEATURE_CASES)
def test_features_only(name: str, out_indices: tuple[int, ...]) -> None:
    """Shapes, reductions and ``feature_info`` for every model; the maps equal the full
    model's stage maps for one model per family."""
    real = name in ONE_PER_FAMILY
    if real:
        full, x = build_small(name)
        kwargs, size = small(name, features_only=True, out_indices=out_indices)
        model = create_model(name, **kwargs).to(F64).eval()
        assert model.load_state_dict(full.state_dict(), strict=False).missing_keys == []
    else:
        full, x = build_fast(name)
        model, _ = build_fast(name, features_only=True, out_indices=out_indices)
        size = x.shape[-1]
    selected = tuple(sorted(i % 4 for i in out_indices))
    info = model.feature_info
    assert info.out_indices == selected and len(info) == 4
    with torch.no_grad():
        maps = model(x)
    assert isinstance(maps, list) and len(maps) == len(selected)
    assert [m.shape[1] for m in maps] == info.channels()
    assert info.reduction() == [full.feature_info[i]["reduction"] for i in selected]
    assert [m.shape[-1] for m in maps] == [size // r for r in info.reduction()]
    assert info.module_name() == [f"stages.{i}" for i in selected]
    assert info.channels(selected[-1]) == maps[-1].shape[1]
    # the stages after the last selected one are not built
    assert len(model.stages) == selected[-1] + 1
    assert not any(k.startswith(f"stages.{selected[-1] + 1}.") for k in model.state_dict())
    with pytest.raises(RuntimeError, match="features_only"):
        model.get_classifier()
    if not real:
        return
    with torch.no_grad():
        if name.startswith("repmlpnet"):
            reference = full.forward_features(x)
        else:
            reference, h = [], (full.stem_pool(full.stem(x)) if hasattr(full, "stem_pool")
                                else full.stem(x))
            for stage in full.stages:
                h = stage(h)
                reference.append(h)
    for m, i in zip(maps, selected, strict=True):
        torch.testing.assert_close(m, reference[i], rtol=0, atol=0)


def test_out_indices_out_of_range() -> None:
    with pytest.raises(ValueError, match="not a stage index"):
        create_model("repmlpnet_t224", features_only=True, out_indices=(4,),
                     **small("repmlpnet_t224")[0])


# ------------------------------------------------------------------------------ checkpointing


class _Counter:
    def __init__(self, modules: list[nn.Module]) -> None:
        self.calls = 0
        # pre-hooks: a checkpointed recomputation stops early, before a forward hook would run
        self.handles = [m.register_forward_pre_hook(self._hook) for m in modules]

    def _hook(self, *args: Any) -> None:
        self.calls += 1


def _blocks(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, reparam_models.RepMLPNet):
        return [unit for stage in model.stages for unit in stage]
    return [block for stage in model.stages for block in stage]


@pytest.mark.parametrize("name", ["repmlpnet_t224", "repmlp_res50_bottleneck_224",
                                  "repmlp_face_res"])
def test_grad_checkpointing_same_gradients(name: str) -> None:
    model, x = build_small(name)
    model.train()
    x.requires_grad_(True)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        x.grad = None
        counter = _Counter(_blocks(model))
        out = model(x)
        forwards = counter.calls
        out.square().sum().backward()
        recomputed = counter.calls - forwards
        results.append((out.detach(), x.grad.clone(),
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
        # with checkpointing each block runs again in the backward pass
        assert recomputed == (len(_blocks(model)) if enable else 0)
    (out0, gx0, g0), (out1, gx1, g1) = results
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    torch.testing.assert_close(gx1, gx0, rtol=1e-12, atol=0)
    assert g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-12, atol=1e-15, msg=k)
    # in eval mode (and under tracing, as deploy does) checkpointing is off
    model.eval()
    counter = _Counter(_blocks(model))
    with torch.no_grad():
        model(x)
    assert counter.calls == len(_blocks(model))


# ------------------------------------------------------------------------------ pretrained


@pytest.mark.parametrize(("name", "origin"), [("repmlpnet_b224", True), ("face_resnet", False),
                                               ("repmlp_res50_bottleneck_320_g4_8", False)])
def test_pretrained_without_weights_is_a_clear_error(name: str, origin: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with torch.device("meta"), pytest.raises(PretrainedWeightsError) as info:
        create_model(name, pretrained=True)
    assert isinstance(info.value, ReparamError) and isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert msg.startswith(f"no pretrained weights for {name!r}")
    for hint in ("pretrained_path=PATH", "pretrained_cfg_overlay=dict(file=PATH)",
                 "set_pretrained_file", WEIGHTS_ENV):
        assert hint in msg
    assert ("github.com/DingXiaoH/RepMLP" in msg) == origin
    assert ("released no weights" in msg) == (not origin)
    assert name not in list_models(pretrained=True)
    with pytest.raises(TypeError, match="pretrained_path=PATH"):
        create_model(name, "weights.pth")  # type: ignore[arg-type]


def test_pretrained_from_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "repmlpnet_t224"
    kwargs = TWO_STAGES
    src = _two_stage_net().float()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "weights.pth"
    torch.save({"model": reparam_models.checkpoint.to_reference_keys(src, src.state_dict())},
               path)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)

    def same_as_src(model: nn.Module) -> None:
        for k, v in src.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k

    same_as_src(create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                             **kwargs))
    try:
        set_pretrained_file(name, path)
        assert list_models(pretrained=True) == [name]
        assert list_models("repmlpnet_*", pretrained=True) == [name]
        model = create_model(name, pretrained=True, **kwargs)
        same_as_src(model)
        assert model.pretrained_cfg["file"] == str(path)
        # a features_only model takes the full checkpoint's weights
        feats = create_model(name, pretrained=True, features_only=True, out_indices=(0,),
                             **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(feats(x)[0], src.forward_features(x)[0], rtol=0, atol=0)
    finally:
        set_pretrained_file(name, None)
    assert list_models(pretrained=True) == []
    with pytest.raises(FileNotFoundError):
        set_pretrained_file(name, tmp_path / "nope.pth")

    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(src.state_dict(), folder / f"{name}.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert list_models(pretrained=True) == [name]
    assert get_pretrained_cfg(name)["file"] == str(folder / f"{name}.pth")
    same_as_src(create_model(name, pretrained=True, **kwargs))


# ------------------------------------------------------------------------------ reparameterize

def test_reparameterize_is_deploy_in_place() -> None:
    model = _two_stage_net()
    x = torch.randn(3, 3, 64, 64, dtype=F64)  # another size than the example input
    with torch.no_grad():
        before = model(x)
    obj = model
    assert model.reparameterize() is None
    assert model is obj and isinstance(model, reparam_models.RepMLPNet)
    infer = _two_stage_net(inference=True)
    infer.load_state_dict(model.state_dict(), strict=True)  # exactly the inference layout
    with torch.no_grad():
        assert reparam.relative_error(before, model(x)) <= 1e-9
        assert reparam.relative_error(before, infer(x)) <= 1e-9
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.reparameterize()  # a second call does nothing
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_timm_reparameterize_model_deploys_the_blocks() -> None:
    """timm's utility calls ``reparameterize()`` on every submodule that has it (never on the
    model itself): every block is deployed in place; RepMLPNet's ``head_norm`` (a merge in the
    model's own forward) stays until ``model.reparameterize()``."""
    timm_model = pytest.importorskip("timm.utils.model")
    model = _two_stage_net()
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    with torch.no_grad():
        before = model(x)
    deployed = timm_model.reparameterize_model(model)
    assert deployed is not model and isinstance(model.stem.bn, nn.BatchNorm2d)  # a copy
    with torch.no_grad():
        assert reparam.relative_error(before, deployed(x)) <= 1e-9
    infer_keys = set(_two_stage_net(inference=True).state_dict())
    keys = set(deployed.state_dict())
    assert keys - infer_keys == {f"head_norm.{s}" for s in (
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert infer_keys <= keys
    deployed.reparameterize()
    assert set(deployed.state_dict()) == infer_keys
    with torch.no_grad():
        assert reparam.relative_error(before, deployed(x)) <= 1e-9

    in_place = _two_stage_net()
    assert timm_model.reparameterize_model(in_place, inplace=True) is in_place
    assert not isinstance(getattr(in_place.stem, "bn", None), nn.BatchNorm2d)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["repmlp_res50_light_224", "repmlp_res50_bottleneck_224",
                                  "resnet50", "repmlp_face_res"])
def test_timm_reparameterize_model_matches_the_inference_form(name: str) -> None:
    timm_model = pytest.importorskip("timm.utils.model")
    model, x = build_small(name)
    with torch.no_grad():
        before = model(x)
    deployed = timm_model.reparameterize_model(model)
    kwargs, _ = small(name)
    infer = create_model(name, inference=True, **kwargs).to(F64).eval()
    infer.load_state_dict(deployed.state_dict(), strict=True)
    with torch.no_grad():
        assert reparam.relative_error(before, deployed(x)) <= 1e-9
        assert reparam.relative_error(before, infer(x)) <= 1e-9


# ------------------------------------------------------------------------------ imports

# timm imported first (the zoo registers at once) and last (it registers when timm loads):
# no warning either way, and the clashing name is reachable under its prefix.
_IMPORT_ORDERS = {
    "timm_first": "import timm\nimport reparam_models\n",
    "timm_last": "import reparam_models\nimport timm\n",
}
_CHECK = """
from reparam_models.timm_bridge import timm_name
assert timm_name("resnet50") == "reparam_resnet50", timm_name("resnet50")
assert timm_name("repmlpnet_t224") == "repmlpnet_t224"
import torch
m = timm.create_model("reparam_resnet50", device="meta")
assert type(m).__name__ == "RepMLPResNet", type(m)
assert type(timm.create_model("resnet50", device="meta")).__module__ == "timm.models.resnet"
print("ok")
"""

# Every submodule imports first in a fresh package state (no import cycle breaks it).
_IMPORT_EACH = """
import importlib, sys
mods = {mods!r}
for name in mods:
    for m in [m for m in sys.modules if m == "reparam_models" or m.startswith("reparam_models.")]:
        del sys.modules[m]
    importlib.import_module(name)
print("ok")
"""


def _package_modules() -> list[str]:
    return sorted(f"reparam_models.{p.stem}" for p in (ROOT / "reparam_models").glob("*.py")
                  if p.stem != "__init__")


@pytest.fixture(scope="module", autouse=True)
def import_runs(request: pytest.FixtureRequest):
    scripts = {
        **{k: v + _CHECK for k, v in _IMPORT_ORDERS.items()},
        "each": _IMPORT_EACH.format(mods=_package_modules()),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-W", "error", "-c", textwrap.dedent(src)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for key, src in scripts.items()
        if key == "each" or _has_timm()
    }
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()


def _has_timm() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def _ok(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert out.strip() == "ok"


@pytest.mark.parametrize("order", list(_IMPORT_ORDERS))
def test_no_warning_on_import(order: str, import_runs: dict) -> None:
    if order not in import_runs:
        pytest.skip("timm is not installed")
    _ok(import_runs[order])


def test_every_submodule_imports_first(import_runs: dict) -> None:
    _ok(import_runs["each"])


def _imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (relative and absolute)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("reparam_models."):
                found.add(node.module.split(".")[1])
    return found


def test_import_graph_has_no_cycle_and_a_pure_registry() -> None:
    pkg = ROOT / "reparam_models"
    graph = {p.stem: _imports(p) for p in pkg.glob("*.py") if p.stem != "__init__"}
    assert graph["registry"] == set()  # a pure table
    families = {"repmlpnet", "repmlp_resnet", "face"}
    for module, deps in graph.items():
        assert not deps & families or module == "timm_bridge", (module, deps & families)
    # no cycle (depth-first search)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, node, dep])}"
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])

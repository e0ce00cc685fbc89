"""A real (tiny) training run in-process: the ``--json`` result, the deployed checkpoint, and
resume reproducing an uninterrupted run bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny import tiny_args

from reparam_models import create_model
from reparam_models.train import main, train
from reparam_models.train.checkpoint import atomic_save
from reparam_models.train.data import load_digits_splits, verification_pairs

REQUIRED = {"top1": float, "top1_deployed": float, "prediction_agreement": float,
            "world_size": int, "start_epoch": int, "epochs": int}


def test_json_result_and_deployed_checkpoint(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(out, "--json")) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    result = json.loads(stdout[-1])
    for key, kind in REQUIRED.items():
        assert isinstance(result[key], kind), (key, result.get(key))
    assert result["world_size"] == 1 and result["start_epoch"] == 0 and result["epochs"] == 1
    assert 0.0 <= result["top1"] <= 1.0
    assert result["prediction_agreement"] == 1.0
    assert result["top1_deployed"] == result["top1"]
    assert result["test_images"] == 40 and result["train_images"] == 64
    assert result["ranks_in_sync"] and result["param_digests"][0] != result["param_digest_start"]
    assert result["params_deployed"] < result["params"]  # the local branches are gone

    # The training checkpoint: every piece a resume needs.
    saved = torch.load(out / "train.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "epoch"} <= set(saved)
    assert saved["epoch"] == 1

    # The deployed checkpoint loads into the zoo's inference form and computes what the
    # trained model computes, on the test images and on another input size.
    dep = torch.load(out / "deployed.pt", weights_only=True)
    trained = create_model(dep["model"], **dep["model_kwargs"])
    trained.load_state_dict(saved["model"])
    infer = create_model(dep["model"], inference=True, **dep["model_kwargs"])
    infer.load_state_dict(dep["state_dict"], strict=True)
    trained.eval(), infer.eval()
    test = load_digits_splits().test
    x = torch.stack([torch.from_numpy(test.images[i]).float().div(255).expand(3, 8, 8)
                     for i in range(8)])
    for inp in (x, torch.randn(3, 3, 16, 16)):
        with torch.no_grad():
            torch.testing.assert_close(infer(inp), trained(inp), rtol=1e-5, atol=1e-5)


def _tensors_equal(a: object, b: object, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _tensors_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            _tensors_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    # mixup/cutmix (NumPy RNG), RandAugment (Python RNG), crops (torch RNG) and EMA all on
    recipe = ["--mixup", "0.4", "--cutmix", "1.0", "--ema-decay", "0.9", "--auto-augment",
              "rand-m9-n2"]
    whole = train(tiny_args(tmp_path / "whole", *recipe, epochs=2))
    first = train(tiny_args(tmp_path / "cut", *recipe, "--stop-after-epochs", "1", epochs=2))
    assert first["stopped_early"] and first["epochs_done"] == 1
    assert first["top1_deployed"] is None and not (tmp_path / "cut" / "deployed.pt").exists()
    resumed = train(tiny_args(tmp_path / "cut", *recipe, "--resume", str(tmp_path / "cut"),
                              epochs=2))
    assert resumed["start_epoch"] == 1 and resumed["epochs_done"] == 2
    a = torch.load(tmp_path / "whole" / "train.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "train.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "ema", "epoch"):
        _tensors_equal(a[key], b[key], key)
    assert resumed["param_digests"] == whole["param_digests"]
    assert resumed["history"] == whole["history"][1:]
    # and the interrupted run had really trained something different by then
    assert first["param_digests"] != whole["param_digests"]


def test_resume_refuses_a_different_seed(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # a checkpoint's recorded arguments are checked before anything is loaded from it
    atomic_save({"args": {"model": "repmlpnet_n8", "task": "classify", "seed": 0,
                          "batch_size": 16}}, tmp_path / "train.pt")
    assert main(tiny_args(tmp_path, "--resume", str(tmp_path), "--seed", "1", epochs=2)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed 0" in err[0], err


FACE_KWARGS = {"img_size": 32, "h": 2, "channels": [16, 32, 64, 128], "stem_channels": 8,
               "embedding_dim": 16}


def test_face_task_trains_with_the_margin_head(tmp_path: Path) -> None:
    result = train(tiny_args(tmp_path, "--task", "face", "--model", "repmlp_face_res",
                             "--model-kwargs", json.dumps(FACE_KWARGS)))
    targets = load_digits_splits().test.targets[:40]
    assert result["task"] == "face" and result["pairs"] == len(verification_pairs(targets))
    assert 0.5 <= result["top1"] <= 1.0 and 0.0 <= result["auc"] <= 1.0
    # deploy is exact in similarity space (decisions of an untrained model can sit on the
    # threshold, so the agreement itself is checked in the slow test below)
    assert result["max_abs_similarity_diff"] < 1e-4
    saved = torch.load(tmp_path / "train.pt", weights_only=True)
    assert any(k.startswith("head.") for k in saved["model"])  # the CosFace head trained too
    dep = torch.load(tmp_path / "deployed.pt", weights_only=True)
    infer = create_model("repmlp_face_res", inference=True, **dep["model_kwargs"])
    infer.load_state_dict(dep["state_dict"], strict=True)


@pytest.mark.slow
def test_face_task_on_all_digits(tmp_path: Path) -> None:
    result = train(["--task", "face", "--model", "repmlp_face_res", "--model-kwargs",
                    json.dumps(FACE_KWARGS), "--epochs", "2", "--warmup-epochs", "0",
                    "--output", str(tmp_path), "--progress", "off"])
    assert result["top1"] > 0.6  # verification accuracy, chance 0.5
    assert result["prediction_agreement"] == 1.0


def test_verification_pairs() -> None:
    targets = [0, 0, 1, 1, 2, 0, 1, 3]  # item 4 is the only 2: it has no same-class partner
    pairs = verification_pairs(targets, seed=0)
    assert pairs.tolist() == verification_pairs(targets, seed=0).tolist()  # fixed
    assert pairs[:, 0].tolist() == [0, 1, 2, 3, 5, 6, 7]
    for a, b, same in pairs:
        assert a != b and same == int(targets[a] == targets[b])
    # even items get a same-class partner, odd items a different-class one
    assert all(same == (a % 2 == 0) for a, _, same in pairs)

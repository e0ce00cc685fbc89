"""Two CPU processes through torchrun (gloo): the replicas stay bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import last_json, run_module, tiny_args

from reparam_models.train.distributed import param_digest


def test_two_processes_keep_identical_parameters(tmp_path: Path) -> None:
    proc = run_module(*tiny_args(tmp_path, "--json"), nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert result["world_size"] == 2
    digests = result["param_digests"]
    # every rank's parameters, hashed on that rank after training
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] != result["param_digest_start"]  # the steps changed them
    # ... and they are what rank 0 saved
    from reparam_models import create_model

    saved = torch.load(tmp_path / "train.pt", weights_only=True)
    model = create_model("repmlpnet_n8", num_classes=10)
    model.load_state_dict(saved["model"])
    assert param_digest(model) == digests[0]
    assert result["global_batch"] == 16 and result["prediction_agreement"] == 1.0
    assert result["test_images"] == 40  # the whole test split, sharded over the two ranks


@pytest.mark.slow
def test_done_when_two_processes_learn_resume_and_deploy(tmp_path: Path) -> None:
    """The issue's acceptance run: 2 processes, 2 epochs on the built-in data, then resume."""
    proc = run_module("--epochs", "2", "--output", str(tmp_path), "--json", nproc=2,
                      timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json(proc.stdout)
    assert result["world_size"] == 2 and result["start_epoch"] == 0
    assert result["top1"] > 0.5  # chance is 0.1
    assert result["prediction_agreement"] == 1.0 and result["ranks_in_sync"]
    proc = run_module("--epochs", "3", "--resume", str(tmp_path), "--output", str(tmp_path),
                      "--json", nproc=2, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = last_json(proc.stdout)
    assert resumed["start_epoch"] == 2 and resumed["epochs_done"] == 3
    assert resumed["prediction_agreement"] == 1.0

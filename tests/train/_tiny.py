"""A tiny training configuration for fast tests (first 64 digits, one batch per step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def tiny_args(output: Path, *extra: str, epochs: int = 1) -> list[str]:
    """Train the nano RepMLPNet (8x8 input) on 64 digits, test on 40; ``extra`` overrides."""
    return [
        "--model", "repmlpnet_n8", "--train-limit", "64", "--test-limit", "40",
        "--batch-size", "16", "--epochs", str(epochs), "--progress", "off",
        "--output", str(output), *extra,
    ]


def run_module(
    *argv: str, nproc: int | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m reparam_models.train ARGV`` (under torchrun with ``nproc`` processes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*launcher, "-m", "reparam_models.train", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])

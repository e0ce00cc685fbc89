"""Checkpoints that survive faults: written to a temporary file, then renamed into place.

``os.replace`` is atomic on POSIX and Windows, so ``train.pt`` is always either the previous
complete checkpoint or the new complete one, never a torn file, even when a run is killed while
saving. A checkpoint holds everything a resumed run needs to continue exactly: model,
optimizer, scheduler, gradient scaler, EMA weights, the number of finished epochs and the
arguments of the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["TRAIN_NAME", "DEPLOYED_NAME", "atomic_save", "resolve_resume", "load"]

TRAIN_NAME = "train.pt"
DEPLOYED_NAME = "deployed.pt"


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to a temporary file next to ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run directory holding ``train.pt``; FileNotFoundError if neither."""
    p = Path(path)
    if p.is_dir():
        p = p / TRAIN_NAME
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint to resume at {str(path)!r}")
    return p


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training checkpoint written by :func:`atomic_save` (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)

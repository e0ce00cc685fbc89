"""Small helpers shared by the engine tests."""

from __future__ import annotations

import io

import torch
from torch import nn

from reparam.demo import randomize_batch_norms


def prepare(model: nn.Module, device: torch.device, dtype=torch.float64, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batch_norms(model, seed).to(device=device, dtype=dtype).eval()


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def relerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def reloaded(model: nn.Module) -> nn.Module:
    """``model`` after a ``torch.save`` / ``torch.load`` round trip through memory."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)

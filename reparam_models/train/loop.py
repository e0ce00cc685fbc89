"""One training epoch, evaluation on the whole test split (sharded over ranks), and the
comparison of a trained model with its deployed form."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .data import shard_loader
from .distributed import DistEnv, gather_objects

__all__ = ["seed_epoch", "StepState", "train_one_epoch", "predict", "FaceTrainer",
           "verification_scores", "best_threshold_accuracy", "top1", "max_abs_diff",
           "autocast_factory"]


def seed_epoch(seed: int, epoch: int, rank: int) -> int:
    """Seed Python, NumPy and torch for ``(seed, epoch, rank)`` and return the seed.

    Every random draw of an epoch (augmentations, mixup, dropout) then depends only on these
    three numbers, which is what makes a run resumed at an epoch boundary bit-identical to an
    uninterrupted one.
    """
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31 - 1)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


class FaceTrainer(nn.Module):
    """An embedding model and its margin head (``reparam_models.CosFaceHead``) as one module,
    so DDP synchronises both: ``forward(x, labels)`` returns the margin logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head(self.backbone(x), labels)


@dataclass
class StepState:
    """What the loop needs besides the model: optimizer, schedule, AMP, mixup, loss, EMA."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    mixup: Any | None
    ema: Any | None
    clip_grad: float | None
    autocast: Callable[[], AbstractContextManager[Any]]
    face: bool = False


def autocast_factory(device: torch.device, amp: str) -> Callable[[], AbstractContextManager[Any]]:
    """``torch.autocast`` in bf16/fp16 on CUDA; a no-op otherwise or for ``amp == "off"``."""
    if device.type != "cuda" or amp == "off":
        return nullcontext
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[Any],
    state: StepState,
    env: DistEnv,
    epoch: int,
    updates_per_epoch: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``model`` (DDP-wrapped or not) for one epoch; returns the mean loss over ranks."""
    from timm.utils import dispatch_clip_grad

    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=env.device)
    for i, (x, y) in enumerate(loader):
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        target = y
        if state.mixup is not None:
            x, target = state.mixup(x, y)
        with state.autocast():
            out = model(x, y) if state.face else model(x)
            loss = state.loss_fn(out, target)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if state.clip_grad:
            state.scaler.unscale_(state.optimizer)
            dispatch_clip_grad(model.parameters(), state.clip_grad)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        num_updates = epoch * updates_per_epoch + i + 1
        state.scheduler.step_update(num_updates=num_updates)
        if state.ema is not None:
            state.ema.update(getattr(model, "module", model), step=num_updates)
        total += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64,
                                                                 device=env.device)])
        if on_step is not None:
            on_step(i + 1, float(loss.detach()))
    state.scheduler.step(epoch + 1)
    if env.distributed:
        torch.distributed.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def _sharded(fn: Callable[[Tensor], Tensor], dataset: Dataset[Any], env: DistEnv, batch: int,
             workers: int) -> np.ndarray:
    """``fn`` on every item of ``dataset``: each rank takes ``rank::world``, results gathered
    back into dataset order on every rank."""
    indices, loader = shard_loader(dataset, batch, env.rank, env.world_size, workers)
    outs = [fn(x.to(env.device)).float().cpu() for x, _ in loader]
    mine = torch.cat(outs).numpy() if outs else np.zeros((0,), dtype=np.float32)
    parts = gather_objects((indices, mine))
    n = sum(len(i) for i, _ in parts)
    first = next(m for _, m in parts if len(m))
    full = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for idx, m in parts:
        full[np.asarray(idx, dtype=np.int64)] = m
    return full


def predict(model: nn.Module, dataset: Dataset[Any], env: DistEnv, batch: int,
            workers: int = 0) -> np.ndarray:
    """Outputs (logits) of ``model`` in eval mode for the whole ``dataset``, in dataset order,
    on every rank."""
    model.eval()
    return _sharded(model, dataset, env, batch, workers)


def verification_scores(model: nn.Module, dataset: Dataset[Any], pairs: np.ndarray,
                        env: DistEnv, batch: int) -> np.ndarray:
    """Cosine similarity of every pair ``(a, b)`` through ``reparam_models.verify_pair``."""
    from reparam_models.face import verify_pair

    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # type: ignore[arg-type]
    mine = np.arange(env.rank, len(pairs), env.world_size)
    sims = []
    for s in range(0, len(mine), batch):
        a, b = pairs[mine[s:s + batch], 0], pairs[mine[s:s + batch], 1]
        sims.append(verify_pair(model, images[a].to(env.device), images[b].to(env.device))
                    .float().cpu())
    local = torch.cat(sims).numpy() if sims else np.zeros(0, dtype=np.float32)
    full = np.empty(len(pairs), dtype=np.float32)
    for idx, part in gather_objects((mine, local)):
        full[idx] = part
    return full


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """``(accuracy, threshold)`` of the best similarity threshold for same/different."""
    candidates = np.unique(scores)
    best = (0.0, float(candidates[0]) if len(candidates) else 0.0)
    for t in candidates:
        acc = float(((scores >= t) == (same == 1)).mean())
        if acc > best[0]:
            best = (acc, float(t))
    return best


def top1(logits: np.ndarray, targets: list[int]) -> float:
    """Fraction of argmax predictions equal to ``targets``."""
    return float((logits.argmax(1) == np.asarray(targets)).mean())


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute element-wise difference."""
    return float(np.abs(a - b).max()) if a.size else 0.0


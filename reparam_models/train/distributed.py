"""The process group, as torchrun describes it in the environment.

``torchrun`` (``torch.distributed.run``) starts one process per device and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; a plain ``python -m`` run
has none of them and is a world of one. The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv", "barrier", "env_rank", "env_world_size", "gather_objects", "param_digest",
    "setup", "teardown",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 for a plain run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` set by torchrun (0 for a plain run)."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto") -> DistEnv:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, else gloo)."""
    world = env_world_size()
    rank = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": "nccl" if use_cuda else "gloo"}
        if use_cuda:
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    """Leave the process group (no-op for a world of one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for a world of one)."""
    if dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in registration order.

    Ranks whose digests agree hold bit-identical parameters: the check that DDP kept the
    replicas in step (each rank sees different data, so unsynchronised gradients diverge).
    """
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

"""Count the convs, norms and linears one forward runs, at the aten level (so functional
``F.conv2d`` calls and module calls count alike)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OP_KINDS", "op_counts"]

#: kind -> substrings of the aten op names that count as that kind
OP_KINDS: dict[str, tuple[str, ...]] = {
    "conv": ("convolution",),
    "norm": ("batch_norm", "_native_batch_norm_legit"),
    "linear": ("addmm", "mm.", "bmm", "linear"),
}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts = dict.fromkeys(OP_KINDS, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = f"{func.__name__}."
        for kind, stems in OP_KINDS.items():
            if any(stem in name for stem in stems):
                self.counts[kind] += 1
                break
        return func(*args, **(kwargs or {}))


def op_counts(model: torch.nn.Module, *inputs: object) -> dict[str, int]:
    """How many convs, norms and linears one forward of ``model`` on ``inputs`` runs."""
    with torch.no_grad(), _OpCounter() as counter:
        model(*inputs)
    return counter.counts

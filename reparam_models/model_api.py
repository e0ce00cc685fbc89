"""The timm model API the zoo's models share: ``reparameterize()``, ``default_cfg``,
``set_grad_checkpointing``, and the helpers behind ``global_pool`` / ``features_only``.

* :class:`Reparameterizable` -- ``reparameterize()`` deploys the module **in place** with the
  generic engine (``reparam.deploy(self, example_inputs, inplace=True)``); there is no per-model
  conversion code. timm's ``timm.utils.reparameterize_model`` (and the ``--reparam`` flag of
  timm's scripts) calls ``reparameterize()`` on every submodule that has it, so a zoo model
  deploys through timm's utility too. The zoo's models and the layers that hold merges (conv+BN
  units, RepMLP blocks, RepMLPNet units) have it. timm's utility never calls it on the model
  itself, only on its submodules: a merge written in the model's own ``forward`` (RepMLPNet's
  ``head_norm`` into ``head``) is left to ``model.reparameterize()`` / ``reparam.deploy``.
* :class:`ZooModel` -- the model-level API: ``default_cfg`` (an alias of ``pretrained_cfg``),
  ``set_grad_checkpointing(enable=True)`` (``torch.utils.checkpoint`` around every block in
  training), ``get_classifier()``; each family adds ``reset_classifier``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx._symbolic_trace as _fx_trace
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "Reparameterizable",
    "ZooModel",
    "check_global_pool",
    "is_tracing",
    "normalize_out_indices",
    "pool_and_flatten",
]

_DEPLOYED = "_reparameterized"


def is_tracing() -> bool:
    """True under ``torch.fx`` symbolic tracing, ``torch.export`` / ``torch.compile`` and
    ``torch.jit.trace``: the eager-only input checks are skipped there."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    symbolic = getattr(_fx_trace, "is_fx_symbolic_tracing", None)
    return bool(symbolic() if symbolic is not None else _fx_trace.is_fx_tracing())


class Reparameterizable:
    """Mixin: ``reparameterize()`` deploys this module in place with ``reparam.deploy``."""

    def example_input_size(self) -> tuple[int, ...] | None:
        """The shape (without batch) of an input this module accepts; ``None`` lets the engine
        take it from ``pretrained_cfg["input_size"]``. Shape-dependent merges (Locality
        Injection) need it."""
        return None

    def _example_inputs(self) -> tuple[Tensor, ...] | None:
        size = self.example_input_size()
        if size is None:
            return None
        assert isinstance(self, nn.Module)
        param = next(self.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else None
        x = torch.randn((1, *size), generator=torch.Generator().manual_seed(0), dtype=dtype)
        return (x.to(device) if device is not None else x,)

    def reparameterize(self) -> None:
        """Deploy this module in place (``reparam.deploy(self, x, inplace=True)``): every
        mergeable structure inside it merged, checked in float64 on an example input. A second
        call, or a call on a submodule of a module already deployed, does nothing."""
        if getattr(self, _DEPLOYED, False):
            return
        from reparam.deploy import deploy

        assert isinstance(self, nn.Module)
        deploy(self, self._example_inputs(), inplace=True)
        for m in self.modules():
            setattr(m, _DEPLOYED, True)


class ZooModel(Reparameterizable):
    """Mixin for the zoo's model classes (on top of ``nn.Module``)."""

    pretrained_cfg: dict[str, Any]
    grad_checkpointing: bool = False

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of :attr:`pretrained_cfg` (the same dict)."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``,
        non-reentrant) instead of storing them; only in training mode. Gradients are unchanged;
        a BatchNorm's running statistics are updated twice per step (as in timm)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classifier module (``pretrained_cfg["classifier"]``)."""
        assert isinstance(self, nn.Module)
        if getattr(self, "features_only", False):
            raise RuntimeError(f"{type(self).__name__} was built with features_only=True: it "
                               "has no classifier")
        return self.get_submodule(self.pretrained_cfg["classifier"])

    def _checkpointing(self) -> bool:
        assert isinstance(self, nn.Module)
        return self.grad_checkpointing and self.training and not is_tracing()

    def _run_block(self, block: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``block(x)``, checkpointed when grad checkpointing is on and the model trains."""
        if self._checkpointing():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _run_sequential(self, blocks: nn.Sequential, x: Tensor) -> Tensor:
        """``blocks(x)``; with grad checkpointing in training, each block checkpointed."""
        if self._checkpointing():
            for block in blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return blocks(x)


def normalize_out_indices(out_indices: Sequence[int], n: int) -> tuple[int, ...]:
    """timm's ``out_indices``: stage indices (negative counts from the end), sorted, unique."""
    out = set()
    for i in out_indices:
        if not -n <= int(i) < n:
            raise ValueError(f"out_indices: {i} is not a stage index (the model has {n} "
                             f"stages: 0..{n - 1}, or -{n}..-1)")
        out.add(int(i) % n)
    if not out:
        raise ValueError("out_indices is empty")
    return tuple(sorted(out))


POOLS = ("avg", "max", "")


def check_global_pool(global_pool: str, num_classes: int, where: str) -> str:
    if global_pool not in POOLS:
        raise ValueError(f"{where}: global_pool must be one of {POOLS}, got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError(f"{where}: global_pool='' (no pooling) needs num_classes=0: the "
                         "Linear classifier takes pooled features")
    return global_pool


def pool_and_flatten(x: Tensor, global_pool: str) -> Tensor:
    """Global pooling by name (``"avg"``, ``"max"``; ``""`` returns the map unchanged)."""
    if global_pool == "avg":
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    if global_pool == "max":
        return torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
    return x

"""Small "user" modules the strategies assemble (module level so they pickle and deepcopy)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# Small "user" modules the strategies assemble (module level so they pickle and deepcopy)
# --------------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """A conv followed by a BN, as a small custom module with ``conv``/``bn`` attributes."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class _NormThenLayer(nn.Module):
    """A BN followed by a linear layer (conv or Linear), with ``bn``/``layer`` attributes."""

    def __init__(self, bn: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.bn = bn
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        return self.layer(out)


class _Scale(nn.Module):
    """Per-channel scale ``x * gamma`` with ``gamma`` of shape ``(C, 1, ..., 1)``."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.gamma = nn.Parameter(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _BNAndPad(nn.Module):
    """BN, then pad by ``pad`` with the value the BN gives a zero input (DBB's BN-and-pad).

    Written with ``F.pad`` (traceable) rather than slice assignment.
    """

    def __init__(self, bn: nn.Module, pad: int, dims: int) -> None:
        super().__init__()
        self.bn = bn
        self.pad = pad
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        if self.pad == 0:
            return out
        bn = self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            fill = bn.bias - bn.running_mean * bn.weight * inv_std
        else:
            fill = -bn.running_mean * inv_std
        fill = fill.view((1, -1) + (1,) * self.dims)
        return F.pad(out - fill, [self.pad] * (2 * self.dims)) + fill


class _Concat(nn.Module):
    """Same-input convs (each optionally followed by a BN) concatenated on channels."""

    def __init__(self, parts: Sequence[nn.Module], bn_after: nn.Module | None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.bn_after = bn_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([p(x) for p in self.parts], dim=1)
        if self.bn_after is not None:
            out = self.bn_after(out)
        return out


class _BlockBase(nn.Module):
    """Parallel branches on one input; subclasses differ only in how they write the sum."""

    def __init__(
        self,
        branches: Sequence[tuple[str, nn.Module]],
        *,
        container: str,
        inline_identity: bool,
        gamma: torch.Tensor | None,
        functional_relu: bool,
        post: nn.Module,
    ) -> None:
        super().__init__()
        if container == "modulelist":
            self.branches = nn.ModuleList([m for _, m in branches])
            self._names: tuple[str, ...] | None = None
        else:
            for name, m in branches:
                self.add_module(name, m)
            self._names = tuple(name for name, _ in branches)
        self.inline_identity = inline_identity
        if gamma is None:
            self.gamma = None
        else:
            self.gamma = nn.Parameter(gamma)
        self.functional_relu = functional_relu
        self.post = post

    def _mods(self) -> list[nn.Module]:
        if self._names is None:
            return list(self.branches)
        return [getattr(self, n) for n in self._names]

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._sum(x)
        if self.gamma is not None:
            out = out + x * self.gamma
        if self.inline_identity:
            out = out + x
        if self.functional_relu:
            out = F.relu(out)
        return self.post(out)


class _PlusBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)
        for m in mods[1:]:
            out = out + m(x)
        return out


class _TorchAddBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)
        for m in mods[1:]:
            out = torch.add(out, m(x))
        return out


class _InplaceAddBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._mods()
        out = mods[0](x)  # always a fresh tensor (a conv branch): never aliases x
        for m in mods[1:]:
            out += m(x)
        return out


class _SumListBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return sum([m(x) for m in self._mods()])


class _ReduceBlock(_BlockBase):
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return functools.reduce(operator.add, [m(x) for m in self._mods()])


_BLOCK_CLASSES: dict[str, type[_BlockBase]] = {
    "plus": _PlusBlock,
    "torch_add": _TorchAddBlock,
    "iadd": _InplaceAddBlock,
    "sum": _SumListBlock,
    "reduce": _ReduceBlock,
}


class _GlobalMean(nn.Module):
    """Global average pooling written as ``x.mean(dims)``."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, 2 + self.dims)))


class _Net(nn.Module):
    """A stack with ``forward_features`` and an optional head."""

    def __init__(self, features: Sequence[nn.Module], head: nn.Module | None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(features)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.head is not None:
            x = self.head(x)
        return x

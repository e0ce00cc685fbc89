"""Helpers shared by the strategies and the zoo (no hypothesis import here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["randomize_norms", "seeded"]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=generator)


def _signed(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` values with magnitude in ``[lo, hi)`` and a random sign."""
    sign = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64) * 2 - 1
    return _uniform(n, lo, hi, generator) * sign.to(torch.float64)


@torch.no_grad()
def randomize_norms(
    module: nn.Module,
    generator: torch.Generator | int | None = None,
    *,
    mean_std: float = 0.5,
    var_range: tuple[float, float] = (0.5, 2.0),
    weight_range: tuple[float, float] = (0.5, 1.5),
    bias_range: tuple[float, float] = (0.1, 1.0),
) -> nn.Module:
    """Give every normalization layer in ``module`` non-trivial statistics and affine params.

    A freshly built ``BatchNorm`` has ``running_mean == 0``, ``running_var == 1``,
    ``weight == 1`` and ``bias == 0``, so a wrong fold would go unnoticed. This sets, in place:

    * ``running_mean`` ~ N(0, ``mean_std``²),
    * ``running_var`` ~ U(``var_range``) (positive, away from 0),
    * ``weight``: magnitude ~ U(``weight_range``) with a random sign,
    * ``bias``: magnitude ~ U(``bias_range``) with a random sign (never ~0).

    Covers BatchNorm/InstanceNorm (running statistics where tracked, affine params where
    present) and the affine params of GroupNorm and LayerNorm. Values are drawn on the CPU in
    float64 from ``generator`` (an ``int`` seeds a fresh one; a fresh unseeded one if ``None``)
    and copied into the module's own device and dtype. Returns ``module``.

    This is the project's one norm randomizer: the tests, the benchmarks, the docs' examples
    and ``reparam.demo`` use it.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    g = generator if generator is not None else torch.Generator()
    for m in module.modules():
        if isinstance(m, _NormBase):
            c = m.num_features
            if m.track_running_stats and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64) * mean_std)
                m.running_var.copy_(_uniform(c, *var_range, g))
            if m.affine:
                m.weight.copy_(_signed(c, *weight_range, g))
                m.bias.copy_(_signed(c, *bias_range, g))
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            w = getattr(m, "weight", None)
            b = getattr(m, "bias", None)
            if w is not None:
                w.copy_(_signed(w.numel(), *weight_range, g).view_as(w))
            if b is not None:
                b.copy_(_signed(b.numel(), *bias_range, g).view_as(b))
    return module


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG seeded to ``seed``, restoring the outer state after.

    Module constructors draw their initial weights from the global RNG; building inside this
    context makes a module a pure function of ``seed`` (so hypothesis can replay and shrink).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

"""What every strategy draws: a :class:`Case` (module, input, description), the size limits
and the helpers that finish a drawn module into a case (randomized norms, eval mode, dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import randomize_norms

Shape = tuple[int, ...]
DeviceLike = torch.device | str

#: Largest channel count any strategy draws.
MAX_CHANNELS = 16
#: Largest spatial extent per dimension, by number of spatial dims.
MAX_SPATIAL: dict[int, int] = {1: 12, 2: 12, 3: 6}
#: Largest batch size.
MAX_BATCH = 2
#: The ways :func:`branch_blocks` writes the sum of its branches.
SUM_STYLES: tuple[str, ...] = ("plus", "torch_add", "iadd", "sum", "reduce")

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVG: dict[int, type[nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_GAP: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
_MAX_EFFECTIVE_KERNEL: dict[int, int] = {1: 9, 2: 9, 3: 5}


# --------------------------------------------------------------------------------------------
# Case
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Case:
    """A drawn module with an example input.

    Attributes:
        module: the module, in eval mode, on the requested device and dtype.
        example_input: an input the module accepts (same device and dtype).
        description: what the module contains (and, for refusals, why it must not merge).
        output_shape: the shape ``module(example_input)`` has; a tuple of shapes when the
            module returns a tuple; ``None`` when not stated.
        refuse: ``True`` when the module holds a pattern whose merge would not be exact.
        tags: the features the module contains (branch kinds, sum style, ...).
    """

    module: nn.Module
    example_input: torch.Tensor
    description: str
    output_shape: Shape | tuple[Shape, ...] | None = None
    refuse: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)

    def run(self) -> Any:
        """``module(example_input)`` under ``torch.no_grad()``."""
        with torch.no_grad():
            return self.module(self.example_input)

    def __repr__(self) -> str:  # keep hypothesis' falsifying-example output readable
        x = self.example_input
        return (
            f"Case({self.description!r}, input={tuple(x.shape)}, dtype={x.dtype}, "
            f"device={x.device}, refuse={self.refuse})"
        )


def check_case(case: Case) -> Any:
    """Run ``case`` and assert its output(s) have ``case.output_shape``; return the output."""
    out = case.run()
    expected = case.output_shape
    if expected is None:
        return out
    if isinstance(out, torch.Tensor):
        got: Any = tuple(out.shape)
    else:
        got = tuple(tuple(o.shape) for o in out)
    assert got == tuple(expected), f"{case.description}: output shape {got} != {expected}"
    return out


# --------------------------------------------------------------------------------------------
# Internal helpers
# --------------------------------------------------------------------------------------------


def _seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


def _tup(v: int, dims: int) -> Shape:
    return (v,) * dims


def _fmt(t: Sequence[int]) -> str:
    return "x".join(str(v) for v in t)


def _make_case(
    module: nn.Module,
    input_shape: Shape,
    seed: int,
    *,
    dtype: torch.dtype,
    device: DeviceLike,
    description: str,
    output_shape: Shape | tuple[Shape, ...] | None,
    refuse: bool = False,
    tags: Sequence[str] = (),
    after_randomize: Callable[[nn.Module, torch.Generator], None] | None = None,
) -> Case:
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    randomize_norms(module, gen)
    if after_randomize is not None:
        with torch.no_grad():
            after_randomize(module, gen)
    module.eval()
    module.to(device=torch.device(device), dtype=dtype)
    x = torch.randn(input_shape, generator=gen, dtype=torch.float64)
    x = x.to(device=torch.device(device), dtype=dtype)
    return Case(module, x, description, output_shape, refuse, frozenset(tags))

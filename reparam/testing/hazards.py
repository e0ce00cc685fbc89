"""Hypothesis strategies that sprinkle trust hazards into random block stacks.

Each drawn :class:`HazardCase` is a :func:`~reparam.testing.strategies.block_stacks` model with
one to four hazards the trace cannot see by itself: forward hooks and pre-hooks that change a
layer's output, a recording hook, a parent reading a norm's weight directly, an optional
argument, a Python side effect on ``self``, an in-place write between two reads, a module
called twice. The property to check is *never silently wrong*: deploy either raises a
:class:`~reparam.errors.ReparamError`, or its result gives the original's outputs on the
example input and on another batch size, with every hook still firing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing.strategies import Case, block_stacks

HAZARDS = (
    "scaling_forward_hook",
    "shifting_pre_hook",
    "recording_hook",
    "parent_reads_norm",
    "optional_argument",
    "side_effect",
    "inplace_between_reads",
    "called_twice",
)


@dataclass
class HazardCase:
    """A hazardous model, its example input, another input, and the hooks' call log."""

    module: nn.Module
    example_input: torch.Tensor
    other_input: torch.Tensor
    hazards: list[str]
    description: str
    calls: list[str] = field(default_factory=list)


class _ReadsNorm(nn.Module):
    def __init__(self, inner: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.norm_ref = [norm]  # not a submodule: the parent reaches into the child

    def forward(self, x):
        gate = torch.sigmoid(self.norm_ref[0].weight.sum())
        return self.inner(x) * gate


class _Optional(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, scale=None):
        if scale is None:
            scale = 1.5
        return self.inner(x) * scale


class _SideEffect(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.last = None

    def forward(self, x):
        y = self.inner(x)
        self.last = y
        return y


class _InPlace(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        first = y * 2.0
        y.relu_()
        return first + y


class _Twice(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.25 * self.inner(x)


def _with_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randn((batch, *x.shape[1:]), generator=g, dtype=torch.float64).to(x)


@st.composite
def hazardous_stacks(draw: st.DrawFn, device: str = "cpu") -> HazardCase:
    """A block stack (2-D, float64) with hazards drawn from :data:`HAZARDS`."""
    case: Case = draw(block_stacks(dims=2, device=device))
    chosen = draw(st.lists(st.sampled_from(HAZARDS), min_size=1, max_size=4, unique=True))
    model = case.module
    calls: list[str] = []
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for hazard in chosen:
        if hazard == "scaling_forward_hook" and layers:
            target = layers[draw(st.integers(0, len(layers) - 1))]
            target.register_forward_hook(lambda m, i, o: o * 1.25)
        elif hazard == "shifting_pre_hook" and layers:
            target = layers[draw(st.integers(0, len(layers) - 1))]
            target.register_forward_pre_hook(lambda m, args: (args[0] + 0.5,))
        elif hazard == "recording_hook" and layers:
            target = layers[draw(st.integers(0, len(layers) - 1))]
            target.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
        elif hazard == "parent_reads_norm" and norms and norms[0].weight is not None:
            model = _ReadsNorm(model, norms[draw(st.integers(0, len(norms) - 1))])
        elif hazard == "optional_argument":
            model = _Optional(model)
        elif hazard == "side_effect":
            model = _SideEffect(model)
        elif hazard == "inplace_between_reads":
            model = _InPlace(model)
        elif hazard == "called_twice":
            model = _Twice(model)
    model.eval()
    x = case.example_input
    other = _with_batch(x, x.shape[0] + 1)
    return HazardCase(model, x, other, chosen, f"{case.description} + {chosen}", calls)

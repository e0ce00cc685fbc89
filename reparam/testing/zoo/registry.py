"""The zoo's registry: ``@zoo_model`` / ``@plain_twin`` on a family's builders fill
:data:`ZOO`, :data:`PLAIN_TWINS` and :data:`ZOO_INPUT_SHAPES`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reparam.testing._common import randomize_norms

__all__ = [
    "PLAIN_TWINS",
    "ZOO",
    "ZOO_INPUT_SHAPES",
    "finish",
    "plain_twin",
    "zoo_example_input",
    "zoo_model",
]

Builder = Callable[..., nn.Module]

#: name -> training-form builder ``(seed=0, dtype=torch.float64) -> nn.Module``.
ZOO: dict[str, Builder] = {}
#: name -> deploy-form (plain) builder, same signature; random weights.
PLAIN_TWINS: dict[str, Builder] = {}
#: name -> an input shape the model accepts.
ZOO_INPUT_SHAPES: dict[str, tuple[int, ...]] = {}


def zoo_model(name: str, input_shape: Sequence[int]) -> Callable[[Builder], Builder]:
    """Register the decorated builder as the training form ``name`` taking ``input_shape``."""

    def register(builder: Builder) -> Builder:
        if name in ZOO:
            raise ValueError(f"zoo model {name!r} is already registered")
        ZOO[name] = builder
        ZOO_INPUT_SHAPES[name] = tuple(input_shape)
        return builder

    return register


def plain_twin(*names: str) -> Callable[[Builder], Builder]:
    """Register the decorated builder as the deploy form of the zoo models ``names``."""

    def register(builder: Builder) -> Builder:
        for name in names:
            if name in PLAIN_TWINS:
                raise ValueError(f"zoo model {name!r} already has a plain twin")
            PLAIN_TWINS[name] = builder
        return builder

    return register


def finish(model: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    """Randomize the norms (from ``seed``), cast to ``dtype``, eval mode."""
    randomize_norms(model, torch.Generator().manual_seed(seed + 7919))
    return model.to(dtype=dtype).eval()


def zoo_example_input(
    name: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A random input of ``ZOO_INPUT_SHAPES[name]`` (drawn on the CPU from ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ZOO_INPUT_SHAPES[name], generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype)

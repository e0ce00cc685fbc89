"""Runtime guards in a deployed forward: loud errors where a trace was specialized.

A trace fixes Python values that the original forward computes at every call: a size turned
into an ``int``, a branch on ``x.shape[-1] > 8``, the length of a shape. Where such a value
depends on the input's shape, the rewritten forward checks at every call that it is the value
seen while tracing, and otherwise raises :class:`SpecializationError` naming what differs —
never a silently different result.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx


class SpecializationError(RuntimeError):
    """A deployed forward was called in a way its trace was not specialized for."""


@fx.wrap
def guard_equal(value: Any, expected: Any, what: str) -> Any:
    """Raise unless ``value == expected`` (``what`` says which Python value of the forward)."""
    if value != expected:
        raise SpecializationError(
            f"reparam deployed this forward for {what} == {expected!r}, got {value!r}; "
            "deploy again with example inputs of this shape (or call the original model)"
        )
    return value


@fx.wrap
def guard_len(value: Any, expected: int, what: str) -> Any:
    """Raise unless ``len(value) == expected``."""
    if len(value) != expected:
        raise SpecializationError(
            f"reparam deployed this forward for len({what}) == {expected}, got {len(value)}; "
            "deploy again with example inputs of this rank"
        )
    return value

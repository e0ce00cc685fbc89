"""Numerical equivalence of two models: the public check behind every exactness claim.

Relative error is ``max|a - b| / max|a|`` over each output tensor. Tolerances by dtype:
float64 1e-9, float32 1e-5, float16/bfloat16 ``torch.testing`` defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from reparam.errors import NotEquivalentError

RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-9,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 1.6e-2,
}


def tolerance_for(dtype: torch.dtype) -> float:
    return RELATIVE_TOLERANCE.get(dtype, 1e-5)


def as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    if example_inputs is None:
        return ()
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in _flatten(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    return []


def relative_error(reference: Any, candidate: Any) -> float:
    """Largest ``max|a-b| / max|a|`` over the output tensors of two forward results."""
    refs, cands = _flatten(reference), _flatten(candidate)
    if len(refs) != len(cands):
        raise NotEquivalentError(
            f"outputs differ in structure: {len(refs)} vs {len(cands)} tensors"
        )
    worst = 0.0
    for a, b in zip(refs, cands, strict=True):
        if a.shape != b.shape:
            raise NotEquivalentError(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
        scale = float(a64.abs().max()) if a64.numel() else 0.0
        diff = float((a64 - b64).abs().max()) if a64.numel() else 0.0
        if scale == 0.0:
            err = diff
        else:
            err = diff / scale
        if err != err:  # NaN
            return float("inf")
        worst = max(worst, err)
    return worst


def run(model: nn.Module, inputs: Sequence[Any]) -> Any:
    with torch.no_grad():
        return model(*inputs)


def to_float64(model: nn.Module, inputs: Sequence[Any]) -> tuple[nn.Module, tuple[Any, ...]]:
    """Deep copies of ``model`` and ``inputs`` in float64 (integer tensors untouched)."""
    m = copy.deepcopy(model).double()
    xs = tuple(
        x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs
    )
    return m, xs


def model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def assert_equivalent(
    reference: nn.Module,
    candidate: nn.Module,
    example_inputs: Any,
    *,
    rtol: float | None = None,
    in_float64: bool = False,
) -> float:
    """Raise :class:`NotEquivalentError` unless both models give the same outputs.

    ``rtol`` defaults to the tolerance of the reference's dtype. ``in_float64`` runs deep
    copies of both models in float64 (the check then measures the maths, not the rounding).
    Returns the relative error.
    """
    inputs = as_inputs(example_inputs)
    tol = rtol if rtol is not None else tolerance_for(model_dtype(reference))
    if in_float64:
        reference, ref_inputs = to_float64(reference, inputs)
        candidate, cand_inputs = to_float64(candidate, inputs)
    else:
        ref_inputs = cand_inputs = inputs
    err = relative_error(run(reference, ref_inputs), run(candidate, cand_inputs))
    if not err <= tol:
        raise NotEquivalentError(f"relative error {err:.3e} exceeds {tol:.1e}")
    return err

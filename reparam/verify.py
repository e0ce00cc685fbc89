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
from reparam.float64_run import NOWHERE, Places, float64_reads, sees_whole_forward

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
        # a NaN or an infinity the original gives too is no error
        same = (a64.isnan() & b64.isnan()) | (a64.isinf() & (a64 == b64))
        if bool(same.any()):
            a64, b64 = a64.masked_fill(same, 0.0), b64.masked_fill(same, 0.0)
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


def _map_tensors(value: Any, fn: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # named tuple
        return type(value)(*(_map_tensors(v, fn) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def clone_inputs(inputs: Sequence[Any]) -> tuple[Any, ...]:
    """Copies of the inputs at every nesting level: a forward that writes into its input
    never writes into the caller's tensors."""
    return tuple(_map_tensors(x, lambda t: t.detach().clone()) for x in inputs)


def _to_double(t: torch.Tensor) -> torch.Tensor:
    """A float64 copy of a floating tensor (a copy also when it is float64 already: a forward
    writing into its input must not write into the caller's), a clone of any other."""
    if t.is_floating_point():
        return t.detach().to(torch.float64, copy=True)
    return t.detach().clone()


def to_float64(model: nn.Module, inputs: Sequence[Any]) -> tuple[nn.Module, tuple[Any, ...]]:
    """Deep copies of ``model`` and ``inputs`` in float64, at every nesting level of the
    inputs (integer tensors untouched)."""
    m = copy.deepcopy(model).double()
    xs = tuple(_map_tensors(x, _to_double) for x in inputs)
    return m, xs


class float64_default:  # noqa: N801 - used like a function
    """While checking in float64, tensors a forward creates without a dtype are float64."""

    def __enter__(self) -> None:
        self._saved = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._saved)


def run_in_float64(model: nn.Module, inputs: Sequence[Any], *, also: Places = NOWHERE) -> Any:
    """``model``'s output in float64 on float64 copies of ``inputs``, without a float64 copy
    of the model where it can (:mod:`reparam.float64_run`; ``also``: more tensors its forward
    may reach, read as copies too): call under :class:`float64_default`."""
    xs = tuple(_map_tensors(x, _to_double) for x in inputs)
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dtype == torch.float64 for t in tensors if t.is_floating_point()) and not also.by_id:
        return run(model, xs)  # a float64 model runs as it is
    if sees_whole_forward(model):
        with float64_reads(model, also=also):
            return run(model, xs)
    m, xs = to_float64(model, inputs)
    return run(m, xs)


def float64_error(
    reference: nn.Module,
    candidate: nn.Module,
    inputs: Sequence[Any],
    *,
    reference_also: Places = NOWHERE,
    candidate_also: Places = NOWHERE,
) -> float:
    """Relative error between two modules run in float64 on copies of ``inputs``, each reading
    its weights cast to float64 call by call (no float64 copy of either module).
    ``reference_also`` / ``candidate_also``: more tensors each forward may reach (see
    :func:`run_in_float64`)."""
    with float64_default():
        try:
            expected = run_in_float64(reference, inputs, also=reference_also)
        except Exception:  # noqa: BLE001 - the forward only runs in its own dtype
            expected = None
        if expected is not None:
            try:
                return relative_error(
                    expected, run_in_float64(candidate, inputs, also=candidate_also)
                )
            except Exception:  # noqa: BLE001 - a rewrite that breaks the forward is not exact
                return float("inf")
    try:
        # a copy: the reference may borrow tensors that no forward may be handed (a check's
        # reference borrows the user's weights: reparam.inputs.copy_model)
        reference = copy.deepcopy(reference)
        return relative_error(
            run(reference, clone_inputs(inputs)), run(candidate, clone_inputs(inputs))
        )
    except Exception:  # noqa: BLE001
        return float("inf")


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

    ``rtol`` defaults to the tolerance of the reference's dtype. ``in_float64`` runs both
    models as their float64 copies would run (the check then measures the maths, not the
    rounding), reading their weights cast call by call (:mod:`reparam.float64_run`): no float64
    copy of either model, and both are left as they were. Returns the relative error.
    """
    inputs = as_inputs(example_inputs)
    tol = rtol if rtol is not None else tolerance_for(model_dtype(reference))
    if in_float64:
        with float64_default():
            err = relative_error(
                run_in_float64(reference, inputs), run_in_float64(candidate, inputs)
            )
    else:
        err = relative_error(run(reference, inputs), run(candidate, inputs))
    if not err <= tol:
        raise NotEquivalentError(f"relative error {err:.3e} exceeds {tol:.1e}")
    return err

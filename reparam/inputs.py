"""Bad input, found before any work: one :class:`~reparam.errors.ReparamError` line that
names the module or the input and the reason; the user's model and tensors untouched."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from reparam.errors import ReparamError


def validate_inputs(example_inputs: Any) -> tuple[Any, ...]:
    """Example inputs as a tuple of positional inputs (a tensor, or a tuple/list of them)."""
    if example_inputs is None:
        return ()
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, dict):
        raise ReparamError(
            "example_inputs is a dict; pass the forward's positional inputs as a tensor or a "
            "tuple (keyword inputs are not supported)"
        )
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise ReparamError(
        f"example_inputs must be a tensor or a tuple of inputs, got {type(example_inputs).__name__}"
    )


def check_model(model: nn.Module) -> None:
    """Refuse models that no deploy can handle: uninitialized lazy or meta-device modules."""
    for path, m in model.named_modules():
        where = f"'{path}' ({type(m).__name__})" if path else f"the model ({type(m).__name__})"
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
            raise ReparamError(
                f"{where} is a lazy module with uninitialized parameters: run one forward "
                "first so its shapes are known"
            )
        for name, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None and t.is_meta:
                raise ReparamError(
                    f"{where} has '{name}' on the meta device (no values to merge): load "
                    "real weights first (e.g. load_state_dict(..., assign=True))"
                )


def _derived_tensors(model: nn.Module) -> dict[int, torch.Tensor]:
    """Tensors that hooks recompute before every call (old-style ``weight_norm``, ``prune``
    keep ``weight`` as a plain attribute computed from other parameters): torch cannot
    deep-copy such non-leaf tensors, and a detached copy is as good, since the hook
    overwrites it at the next call."""
    memo: dict[int, torch.Tensor] = {}
    for m in model.modules():
        for value in m.__dict__.values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    return memo


def _borrowable(model: nn.Module) -> dict[int, torch.Tensor]:
    """The floating parameters and buffers that :mod:`reparam.float64_run` never hands to a
    forward (it reads them cast to float64): not float64 already."""
    return {
        id(t): t
        for t in [*model.parameters(), *model.buffers()]
        if t.is_floating_point() and t.dtype != torch.float64
    }


def copy_model(model: nn.Module, *, borrow: bool = False) -> nn.Module:
    """A deep copy to work on; names the submodule that cannot be copied.

    ``borrow`` copies the modules but keeps the model's own floating (not float64) parameters
    and buffers in them, uncopied: such a copy must only run under
    :class:`reparam.float64_run.float64_reads`, which reads those tensors cast to float64 and
    writes only to the casts. The checks' reference is such a copy (no second set of weights).
    """
    memo = _derived_tensors(model)
    if borrow:
        memo.update(_borrowable(model))
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:  # noqa: BLE001 - find the culprit for the message
        culprit = "the model"
        for path, m in model.named_modules():
            if not path:
                continue
            try:
                copy.deepcopy(m)
            except Exception:  # noqa: BLE001
                culprit = f"'{path}' ({type(m).__name__})"
        raise ReparamError(
            f"deploy works on a copy, and {culprit} cannot be deep-copied: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None

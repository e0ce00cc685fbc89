"""Read checkpoints and load them into the zoo's models, in our key layout or the reference's.

Reference implementation: https://github.com/DingXiaoH/RepMLP (arXiv:2105.01883, arXiv:2112.11081).

This module is family-agnostic (the timm shape): each family file owns its key map and passes
its ``checkpoint_filter_fn(state_dict, model) -> state_dict`` to the builder, which hands it to
:func:`load_checkpoint`. A filter renames the reference's keys to ours (:class:`KeyMap`) and
folds the norms that a checkpoint still has but the model's inference form has folded away
(:func:`fold_norms`). The free functions here (:func:`load_reference_state_dict`,
:func:`map_reference_keys`, :func:`to_reference_keys`) find a model's filter and key map by
convention: the ``checkpoint_filter_fn`` and ``REFERENCE_KEYS`` of the module that defines the
model's class (or a base class); a model from elsewhere loads with its keys as they are.

Layouts: a reference *training-time* checkpoint loads into the training form
(``create_model(name)``); a reference *deployed* checkpoint loads into the inference form
(``create_model(name, inference=True)``). The reference RepMLPNet deploy checkpoints keep the BN
of their plain conv+BN units (stem, embeds, FFN), the BN in front of each FFN (``prebn2``) and the
head's BN (``head_norm``); our inference form has all of those folded (the layout the
``reparam.deploy`` engine produces), so the filter folds each such BN into its conv / linear with
the engine's maths (:mod:`reparam.transforms`; exact up to rounding). A training-time checkpoint
cannot be loaded into the inference form (that needs Locality Injection): load it into the
training form and deploy with the engine.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from reparam.transforms import (
    fold_affine_after,
    fold_affine_before,
    norm_to_affine,
    repeat_affine,
)

from .layers import ConvBN, RepMLP, RepMLPNetUnit

__all__ = [
    "CheckpointFilter",
    "Fold",
    "KeyMap",
    "LoadResult",
    "checkpoint_filter_of",
    "fold_norms",
    "layer_folds",
    "load_checkpoint",
    "load_reference_state_dict",
    "map_reference_keys",
    "read_checkpoint",
    "to_reference_keys",
]

CheckpointFilter = Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]
_Repl = str | Callable[[re.Match[str]], str]
_BN_EPS = 1e-5  # the reference builds every BatchNorm with the default eps
_TRAINING_ONLY = re.compile(r"(^|\.)(repconv\d+|fc3_bn|avg\.bn)\.")


class LoadResult(NamedTuple):
    """Keys of the model left unfilled and checkpoint keys left unused (non-strict loads)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass(frozen=True)
class KeyMap:
    """Renames between a reference implementation's keys and ours.

    ``to_ours`` / ``to_reference`` are ``(regex, replacement)`` rules; the first rule that
    matches a key renames it, a key no rule matches keeps its name.
    """

    ours: tuple[tuple[str, _Repl], ...] = ()
    reference: tuple[tuple[str, _Repl], ...] = ()

    @staticmethod
    def _rename(key: str, rules: Iterable[tuple[str, _Repl]]) -> str:
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key, count=1)
            if n:
                return new
        return key

    def to_ours(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k, v in state_dict.items():
            new = self._rename(k, self.ours)
            if new in out:
                raise ValueError(f"two checkpoint keys map to {new!r} (one of them is {k!r})")
            out[new] = v
        return out

    def to_reference(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {self._rename(k, self.reference): v for k, v in state_dict.items()}


_IDENTITY = KeyMap()


def _family(model: nn.Module) -> Any:
    """The module defining ``model``'s class (or its nearest base) that has a filter."""
    for cls in type(model).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and callable(getattr(module, "checkpoint_filter_fn", None)):
            return module
    return None


def checkpoint_filter_of(model: nn.Module) -> CheckpointFilter:
    """``model``'s family's ``checkpoint_filter_fn`` (keys as they are for other models)."""
    family = _family(model)
    if family is None:
        return lambda state_dict, model: dict(state_dict)
    return family.checkpoint_filter_fn


def _key_map(model: nn.Module) -> KeyMap:
    family = _family(model)
    return getattr(family, "REFERENCE_KEYS", _IDENTITY) if family is not None else _IDENTITY


def map_reference_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a reference state_dict's keys to ours (keys already in our layout pass through)."""
    return _key_map(model).to_ours(state_dict)


def to_reference_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename our keys to the reference implementation's (the inverse of the loader's mapping)."""
    return _key_map(model).to_reference(state_dict)


def _unwrap(obj: Any) -> dict[str, Tensor]:
    """Find the state_dict inside a checkpoint object; strip a DataParallel ``module.`` prefix."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model", "model_state_dict", "module", "net"):
                if isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("could not find a state_dict (a mapping of names to tensors) in the "
                         "checkpoint")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


@dataclass(frozen=True)
class Fold:
    """A norm that the inference form has folded into a neighbouring conv / linear."""

    norm: str  # key prefix of the norm in a checkpoint that still has it
    target: str  # the conv / linear it is folded into (keys "{target}.weight" / ".bias")
    before: bool  # the norm precedes the target (acts on its input) or follows it
    repeats: int = 1  # input features of the target per norm channel (a flatten between)


def layer_folds(model: nn.Module) -> list[Fold]:
    """The norms of the shared layers (:mod:`reparam_models.layers`) that ``model``'s inference
    form has folded away, except the RepMLP blocks' own (``fc3_bn``, ``repconv*``: those need
    Locality Injection): conv+BN units, ``prebn2`` and the v1 pooled BN (``avg.bn``)."""
    folds: list[Fold] = []
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, ConvBN) and isinstance(m.bn, nn.Identity) and m.conv.bias is not None:
            folds.append(Fold(f"{p}bn", f"{p}conv", before=False))
        elif isinstance(m, RepMLPNetUnit) and isinstance(m.prebn2, nn.Identity):
            folds.append(Fold(f"{p}prebn2", f"{p}ffn_block.ffn_fc1.conv", before=True))
        elif (
            isinstance(m, RepMLP)
            and m.need_global_perceptron
            and isinstance(m.avg.bn, nn.Identity)
        ):
            folds.append(Fold(f"{p}avg.bn", f"{p}fc1_fc2.fc1", before=True,
                              repeats=m.h_parts * m.w_parts))
    return folds


def fold_norms(sd: dict[str, Tensor], folds: Iterable[Fold]) -> dict[str, Tensor]:
    """Fold each norm of ``folds`` that ``sd`` still has into its conv / linear, in place, with
    the engine's maths (:mod:`reparam.transforms`, computed in float64). Exact up to rounding;
    a fold whose keys ``sd`` lacks (already folded: our layout) is skipped."""
    for fold in folds:
        stats = [f"{fold.norm}.{s}" for s in ("running_mean", "running_var", "weight", "bias")]
        wkey, bkey = f"{fold.target}.weight", f"{fold.target}.bias"
        if not all(k in sd for k in stats) or wkey not in sd:
            continue
        mean, var, gamma, beta = (sd[k] for k in stats)
        scale, shift = norm_to_affine(mean.double(), var.double(), gamma.double(),
                                      beta.double(), _BN_EPS)
        weight = sd[wkey]
        bias = sd.get(bkey)
        if fold.before:
            if fold.repeats > 1:
                scale, shift = repeat_affine(scale, shift, fold.repeats)
            new_w, new_b = fold_affine_before(weight.double(), _double(bias), scale, shift)
        else:
            new_w, new_b = fold_affine_after(weight.double(), _double(bias), scale, shift)
        sd[wkey], sd[bkey] = new_w.to(weight.dtype), new_b.to(weight.dtype)
        for k in [*stats, f"{fold.norm}.num_batches_tracked"]:
            sd.pop(k, None)
    return sd


def _double(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.double()


def _fmt(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_reference_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    strict: bool = True,
    filter_fn: CheckpointFilter | None = None,
) -> LoadResult:
    """Load a reference-implementation (or our own) state_dict into ``model``.

    Handles the reference key names for all released RepMLPNet and RepMLP-ResNet variants, in
    their training-time and deployed layouts (see the module docstring). ``filter_fn`` (default:
    the model family's ``checkpoint_filter_fn``) maps the checkpoint to our layout. With
    ``strict`` any missing or unexpected key raises a ``ValueError`` naming them; shape
    mismatches always raise.
    """
    filter_fn = filter_fn or checkpoint_filter_of(model)
    sd = filter_fn(_unwrap(state_dict), model)
    target = model.state_dict()
    for k, v in target.items():  # older checkpoints may lack BN counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()

    missing = sorted(k for k in target if k not in sd)
    unexpected = sorted(k for k in sd if k not in target)
    cls = type(model).__name__
    train_only = [k for k in unexpected if _TRAINING_ONLY.search(k)]
    if train_only and any(k.endswith("fc3.bias") for k in missing):
        raise ValueError(
            f"{cls}: this is a training-time checkpoint (it has e.g. {train_only[0]!r}) but the "
            "model is the inference form. Build the training form (inference=False), load it "
            "there, then deploy with reparam.deploy."
        )
    deployed = [k for k in unexpected if k.endswith("fc3.bias")]
    if deployed and any(_TRAINING_ONLY.search(k) for k in missing):
        raise ValueError(
            f"{cls}: this is a deployed checkpoint (it has e.g. {deployed[0]!r}) but the model "
            "is the training-time form. Build it with inference=True to load deployed weights."
        )
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target if k in sd and sd[k].shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(f"{cls}: shape mismatch for {len(mismatched)} key(s) (wrong variant?): "
                         + "; ".join(mismatched[:8]))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        raise ValueError(f"{cls}: checkpoint does not match the model; " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items() if k in target}, strict=strict)
    return LoadResult(missing, unexpected)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state_dict from a ``torch.save`` file or a ``.safetensors`` file (on the CPU)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True))


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    strict: bool = True,
    filter_fn: CheckpointFilter | None = None,
) -> LoadResult:
    """Read ``path`` and load it with :func:`load_reference_state_dict`."""
    return load_reference_state_dict(model, read_checkpoint(path), strict=strict,
                                     filter_fn=filter_fn)

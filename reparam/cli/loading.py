"""Build or load a model from one string, as the command line does; usable from Python.

``load_model(spec)`` understands:

* ``None``: the built-in demo network;
* a file saved with ``torch.save(model)`` (unpickled: load only files you trust); the current
  directory is put on ``sys.path`` first, so a model whose class lives next to the file loads;
* ``package.module:factory`` (a callable returning an ``nn.Module``, or a module object);
* ``timm/NAME``: ``timm.create_model(NAME, pretrained=False)`` (never downloads);
* a zoo name (``reparam_models.list_models()``);
* a state_dict checkpoint file together with ``arch`` (any of the three kinds of names above).

``model_kwargs`` go to the factory, the zoo's or timm's ``create_model``; from a shell they are
written ``num_classes=10,drop_rate=0.1`` (see :func:`parse_model_kwargs`).

>>> from reparam.cli.loading import load_model, example_inputs
>>> loaded = load_model("timm/repvit_m0_9", model_kwargs={"num_classes": 10})  # doctest: +SKIP
>>> inputs, source = example_inputs(loaded.model)  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reparam.cli.errors import oneline
from reparam.errors import ReparamError

__all__ = [
    "DEMO_NAME",
    "LoadedModel",
    "ModelLoadError",
    "example_inputs",
    "load_model",
    "parse_model_kwargs",
    "probe",
]

DEMO_NAME = "built-in demo (RepVGG / ACNet / MobileOne-style blocks)"
TIMM_PREFIX = "timm/"
_PATH_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar", ".safetensors", ".onnx")


class ModelLoadError(ReparamError):
    """The model could not be built or loaded; the message is one line, with the fix."""


@dataclass
class LoadedModel:
    """A model and the name to show for it."""

    model: nn.Module
    name: str


# --------------------------------------------------------------------------------------------
# keyword arguments


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``"num_classes=10,drop_rate=0.1,global_pool=avg"`` → ``{"num_classes": 10, ...}``.

    Values are Python literals (ints, floats, ``True``/``False``/``None``, quoted strings,
    tuples and lists); ``true``/``false``/``none`` in any case are the booleans and None; any
    other value is the string as written (``global_pool=avg``, ``act=gelu_tanh``).
    """
    text = text.strip()
    if not text:
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise ValueError(
            f"'{text}' is not a list of KEY=VALUE pairs separated by commas, "
            "e.g. num_classes=10,drop_rate=0.1"
        ) from exc
    assert isinstance(call, ast.Call)
    source = f"f({text})"
    if call.args or any(k.arg is None for k in call.keywords):
        raise ValueError(
            f"'{text}': every item must be KEY=VALUE (e.g. num_classes=10,drop_rate=0.1)"
        )
    return {str(k.arg): _literal(k.value, source) for k in call.keywords}


_WORDS = {"true": True, "false": False, "none": None}


def _literal(node: ast.expr, source: str) -> Any:
    written = ast.get_source_segment(source, node) or ""
    if isinstance(node, ast.Name) and node.id.lower() in _WORDS:
        return _WORDS[node.id.lower()]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return written  # a bare word (avg, gelu_tanh, nn.ReLU, avg-max): the text itself


# --------------------------------------------------------------------------------------------
# sources


def _cwd_on_path() -> None:
    """As ``python -m`` does: modules in the current directory are importable (also by
    ``pickle`` when it rebuilds a saved model's class)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _looks_like_path(spec: str) -> bool:
    return (
        "/" in spec or "\\" in spec or spec.startswith(".") or spec.lower().endswith(_PATH_SUFFIXES)
    )


def _call(factory: Any, kwargs: Mapping[str, Any], what: str) -> nn.Module:
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a failing factory is bad input
        raise ModelLoadError(f"'{what}' failed to build the model: {oneline(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"'{what}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_factory(spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"'{spec}' is not package.module:factory")
    _cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the import raises is bad input
        raise ModelLoadError(
            f"cannot import module '{module_name}' for '{spec}': {oneline(exc)}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"'{spec}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ModelLoadError(f"'{spec}' is a model object, not a factory: it takes no kwargs")
        return obj
    if not callable(obj):
        raise ModelLoadError(f"'{spec}' is a {type(obj).__name__}, not a model factory")
    return _call(obj, kwargs, spec)


def _timm_model(spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    name = spec[len(TIMM_PREFIX) :]
    try:
        import timm
    except ImportError as exc:
        raise ModelLoadError(
            f"'{spec}' needs timm, which is not installed (pip install timm)"
        ) from exc
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ModelLoadError(f"unknown timm model '{name}'{hint}")
    if "pretrained" in kwargs:
        raise ModelLoadError(
            f"'{spec}' is built without downloading weights: load trained weights with "
            f"`reparam deploy CHECKPOINT --model {spec}` instead of pretrained=..."
        )
    return _call(lambda **kw: timm.create_model(name, pretrained=False, **kw), kwargs, spec)


def _zoo_model(name: str, kwargs: Mapping[str, Any], option: str | None = None) -> nn.Module:
    import reparam_models

    if not reparam_models.is_model(name):
        close = difflib.get_close_matches(name, reparam_models.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        what = "not package.module:factory" if option else "not a file, not package.module:factory"
        raise ModelLoadError(
            f"unknown {option or 'model'} '{name}': {what}, not timm/NAME and not a zoo "
            f"model{hint} (`reparam models` lists the zoo)"
        )
    try:
        return reparam_models.create_model(name, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"building zoo model '{name}' failed: {oneline(exc)}") from exc


def _build(name: str, kwargs: Mapping[str, Any], option: str | None = None) -> nn.Module:
    """An architecture from ``timm/NAME``, ``package.module:factory`` or a zoo name."""
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name, kwargs)
    if ":" in name and not _looks_like_path(name.partition(":")[0]):
        return _import_factory(name, kwargs)
    return _zoo_model(name, kwargs, option)


def _load_file(path: Path) -> nn.Module:
    """A whole model saved with ``torch.save(model)`` (unpickled: load only trusted files)."""
    _cwd_on_path()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is bad input
        if isinstance(exc, (AttributeError, ModuleNotFoundError, ImportError)):
            hint = " (the model's class must be importable where you run reparam)"
        else:
            hint = " (is it a file written by torch.save?)"
        raise ModelLoadError(f"cannot load '{path}': {oneline(exc)}{hint}") from exc
    if isinstance(obj, torch.jit.ScriptModule):
        raise ModelLoadError(
            f"'{path}' is a TorchScript module, which cannot be re-parameterized: save the eager "
            "model (torch.save(model)) before torch.jit.script/trace"
        )
    if isinstance(obj, Mapping):
        kind = (
            "a state_dict"
            if obj and all(isinstance(v, torch.Tensor) for v in obj.values())
            else "a checkpoint dict"
        )
        entries = f"{len(obj)} entr{'y' if len(obj) == 1 else 'ies'}"
        raise ModelLoadError(
            f"'{path}' holds {kind} ({entries}), not a model: pass --model NAME "
            "(a zoo name, timm/NAME or package.module:factory) to build the architecture to "
            "load it into"
        )
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"'{path}' holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_checkpoint(path: Path, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    from reparam_models.checkpoint import load_reference_state_dict, read_checkpoint

    model = _build(arch, kwargs, "--model")
    try:
        state_dict = read_checkpoint(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read a state_dict from '{path}': {oneline(exc)}") from exc
    try:
        load_reference_state_dict(model, state_dict, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"'{path}' does not fit --model {arch}: {oneline(exc)}") from exc
    return model


def load_model(
    source: str | os.PathLike[str] | None = None,
    *,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """The model named by ``source`` (see the module docstring), or ``source`` loaded as a
    state_dict checkpoint into ``arch``. Raises :class:`ModelLoadError` with a one-line
    message (and a "did you mean" for a mistyped name)."""
    kwargs = dict(model_kwargs or {})
    if source is None and arch is None:
        if kwargs:
            raise ModelLoadError(
                "--model-kwargs needs MODEL: a zoo name, timm/NAME or package.module:factory"
            )
        from reparam.demo import demo_model

        return LoadedModel(demo_model()[0], DEMO_NAME)
    if source is None:
        assert arch is not None
        return LoadedModel(_build(arch, kwargs, "--model"), arch)
    source = os.fspath(source)
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise ModelLoadError(f"'{source}' is a folder, not a model file")
        if arch is not None:
            return LoadedModel(_load_checkpoint(path, arch, kwargs), f"{arch} ({source})")
        if kwargs:
            raise ModelLoadError(
                f"'{source}' is a saved model, built already: --model-kwargs applies to a model "
                "built from a name (or to --model NAME with a checkpoint)"
            )
        return LoadedModel(_load_file(path), source)
    if arch is not None:
        raise ModelLoadError(
            f"no such file: '{source}' (with --model, MODEL is the checkpoint to load)"
        )
    if source.startswith(TIMM_PREFIX):
        return LoadedModel(_timm_model(source, kwargs), source)
    if ":" in source and not _looks_like_path(source.partition(":")[0]):
        return LoadedModel(_import_factory(source, kwargs), source)
    if _looks_like_path(source):
        raise ModelLoadError(f"no such file: '{source}'")
    return LoadedModel(_zoo_model(source, kwargs), source)


# --------------------------------------------------------------------------------------------
# example inputs


def _tensor_kind(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


def example_inputs(
    model: nn.Module, shapes: Sequence[Sequence[int]] | None = None
) -> tuple[tuple[torch.Tensor, ...] | None, str | None]:
    """``(inputs, where their shape came from)``: random tensors (seed 0, the model's dtype and
    device) of the given ``shapes``, else of ``model.pretrained_cfg['input_size']`` (batch 1),
    else ``(None, None)``."""
    from reparam.deploy import default_example_inputs

    if shapes:
        dtype, device = _tensor_kind(model)
        gen = torch.Generator().manual_seed(0)
        inputs = tuple(torch.randn(tuple(s), generator=gen, dtype=dtype).to(device) for s in shapes)
        return inputs, "--input-shape"
    inputs = default_example_inputs(model)
    return (inputs, "pretrained_cfg['input_size']") if inputs else (None, None)


def probe(model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> None:
    """Run the model once (eval mode, no grad) so a wrong input shape is a clear error here
    rather than a failure deep inside deploy."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:  # noqa: BLE001
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ModelLoadError(
            f"'{name}' does not run on input {shapes}: {oneline(exc)} "
            "(set the shape with --input-shape)"
        ) from exc
    finally:
        model.train(was_training)

"""Export a (deployed) model to ONNX and check the file against the model in onnxruntime.

Exporter: by default the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``).
It is the one PyTorch maintains (the default since 2.9; the TorchScript exporter is deprecated
and warns that it will be removed), it needs only ``onnx`` and ``onnxscript``, both local Python
packages, so it runs fully offline, and it traces through the forwards that ``reparam.deploy``
generates exactly as ``torch.export.export`` does. Where ``onnxscript`` is not installed,
``dynamo=None`` (the default) falls back to the TorchScript exporter, which needs nothing beyond
torch; ``dynamo=True`` / ``dynamo=False`` force one or the other.

The file is self-contained (weights inside) unless the weights pass the 2 GB protobuf limit, in
which case they go to ``<path>.data`` beside it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reparam.errors import NotEquivalentError, ReparamError
from reparam.verify import _flatten, as_inputs, model_dtype, relative_error, run, tolerance_for

__all__ = ["check_onnx", "export_onnx", "onnx_exporter", "onnxruntime_available"]

_PROTOBUF_LIMIT = 2**31 - 2**26  # stay clear of protobuf's 2 GiB message limit


def onnx_exporter(dynamo: bool | None = None) -> str:
    """Which exporter :func:`export_onnx` uses: ``"dynamo"`` or ``"torchscript"``."""
    if dynamo is None:
        dynamo = importlib.util.find_spec("onnxscript") is not None
    return "dynamo" if dynamo else "torchscript"


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _tensor_inputs(inputs: tuple[Any, ...]) -> list[torch.Tensor]:
    return [x for x in inputs if isinstance(x, torch.Tensor)]


def _weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    dynamo: bool | None = None,
    dynamic_batch: bool = False,
    opset_version: int | None = None,
) -> Path:
    """Write ``model`` (run on ``example_inputs``) to the ONNX file ``path`` and return it.

    Args:
        model: the model to export, usually the result of :func:`reparam.deploy`. It is
            exported in eval mode and is not changed.
        example_inputs: a tensor or a tuple of positional inputs.
        path: the ``.onnx`` file to write (its folder must exist).
        dynamo: ``True`` the ``torch.export``-based exporter, ``False`` the TorchScript one,
            ``None`` the former when ``onnxscript`` is installed (see the module docstring).
        dynamic_batch: make dimension 0 of every tensor input (and output) symbolic, so the
            file accepts any batch size; otherwise the shapes of ``example_inputs`` are fixed.
        opset_version: the ONNX opset (default: the exporter's).

    Raises:
        ReparamError: the exporter failed (the message names the model and the cause).
    """
    path = Path(path)
    inputs = as_inputs(example_inputs)
    if not _tensor_inputs(inputs):
        raise ReparamError("ONNX export needs example inputs with at least one tensor")
    use_dynamo = onnx_exporter(dynamo) == "dynamo"
    was_training = model.training
    model.eval()
    try:
        if use_dynamo:
            _export_dynamo(model, inputs, path, dynamic_batch, opset_version)
        else:
            _export_torchscript(model, inputs, path, dynamic_batch, opset_version)
    except ReparamError:
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one error
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ReparamError(
            f"ONNX export ({onnx_exporter(use_dynamo)} exporter) of "
            f"{type(model).__name__} failed: {type(exc).__name__}: {first}"
        ) from exc
    finally:
        model.train(was_training)
    return path


def _export_dynamo(
    model: nn.Module,
    inputs: tuple[Any, ...],
    path: Path,
    dynamic_batch: bool,
    opset_version: int | None,
) -> None:
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim.DYNAMIC
        dynamic_shapes = tuple({0: batch} if isinstance(x, torch.Tensor) else None for x in inputs)
    # verbose=False: the exporter otherwise prints its progress on stdout, which must stay
    # clean for `reparam deploy --onnx ... --json`.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            verbose=False,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
        )
    if program is None:  # pragma: no cover - torch always returns the program with dynamo
        raise ReparamError("torch.onnx.export returned no ONNX program")
    program.save(str(path), external_data=_weight_bytes(model) > _PROTOBUF_LIMIT)


def _export_torchscript(
    model: nn.Module,
    inputs: tuple[Any, ...],
    path: Path,
    dynamic_batch: bool,
    opset_version: int | None,
) -> None:
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        n_in = len(_tensor_inputs(inputs))
        n_out = len(_flatten(run(model, inputs)))
        in_names = [f"input_{i}" for i in range(n_in)]
        out_names = [f"output_{i}" for i in range(n_out)]
        kwargs = dict(
            input_names=in_names,
            output_names=out_names,
            dynamic_axes={name: {0: "batch"} for name in in_names + out_names},
        )
    with warnings.catch_warnings():
        # the deprecation notice of the TorchScript exporter: we chose it on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model,
            inputs,
            str(path),
            dynamo=False,
            verbose=False,
            opset_version=opset_version,
            **kwargs,
        )


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    example_inputs: Any,
    *,
    rtol: float | None = None,
) -> float:
    """Run the ONNX file in onnxruntime (CPU) and compare with ``model`` on ``example_inputs``.

    ``model`` runs in eval mode, as :func:`export_onnx` exports it (its mode is restored); it
    can be the exported model or the train-form model it was deployed from.

    The comparison is :func:`reparam.relative_error` (``max|a-b| / max|a|`` per output);
    ``rtol`` defaults to the tolerance of the model's dtype (1e-5 for float32).

    Returns:
        the relative error.

    Raises:
        ImportError: onnxruntime is not installed.
        NotEquivalentError: the outputs differ by more than ``rtol`` (or in structure).
    """
    import onnxruntime as ort

    inputs = as_inputs(example_inputs)
    tensors = _tensor_inputs(inputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(
        os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(tensors):
        raise NotEquivalentError(
            f"{os.fspath(path)} takes {len(names)} input(s), the model got {len(tensors)} tensor(s)"
        )
    feed = {name: t.detach().cpu().numpy() for name, t in zip(names, tensors, strict=True)}
    got = [torch.from_numpy(o) for o in session.run(None, feed)]
    was_training = model.training
    model.eval()  # as exported
    try:
        expected = run(model, inputs)
    finally:
        model.train(was_training)
    err = relative_error(expected, got)
    tol = rtol if rtol is not None else tolerance_for(model_dtype(model))
    if not err <= tol:
        raise NotEquivalentError(
            f"onnxruntime output of {os.fspath(path)} differs from the model: relative error "
            f"{err:.3e} exceeds {tol:.1e}"
        )
    return err

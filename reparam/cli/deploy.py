"""``reparam deploy``: deploy a model, print the report, save it, export it to ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reparam.cli import steps
from reparam.cli.errors import EXIT_FAILED, EXIT_OK, CLIError, oneline
from reparam.cli.options import output_path, rule_names
from reparam.cli.terminal import Terminal

HELP = "deploy a model and print the report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="save the deployed model with torch.save")
    p.add_argument(
        "--onnx",
        metavar="FILE",
        help="export the deployed model to ONNX and check it in onnxruntime",
    )
    p.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="with --onnx: let the ONNX file take any batch size",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check every single rewrite in float64 and roll back any that is not exact",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="list every site that merged or was refused (default: a summary per rule)",
    )
    p.add_argument(
        "--weight-ranges",
        action="store_true",
        help="add the largest |weight| of every layer before and after (for int8 users)",
    )


def _export(
    model: nn.Module,
    reference: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    args: argparse.Namespace,
    ui: Terminal,
) -> dict[str, Any]:
    """Export to ONNX and check the file against the original model; the result dict has an
    ``error`` entry when either step failed."""
    from reparam import NotEquivalentError, ReparamError
    from reparam.export import check_onnx, export_onnx, onnx_exporter, onnxruntime_available

    info: dict[str, Any] = {
        "path": str(path),
        "exporter": onnx_exporter(),
        "dynamic_batch": args.dynamic_batch,
    }
    with ui.step(f"exporting ONNX to {path}"):
        try:
            export_onnx(model, inputs, path, dynamic_batch=args.dynamic_batch)
        except ReparamError as exc:
            info["error"] = str(exc)
            return info
    if not onnxruntime_available():
        info["checked"] = False
        info["note"] = "onnxruntime is not installed: the file was not run"
        return info
    with ui.step("checking the ONNX file in onnxruntime"):
        try:
            info["max_relative_error"] = check_onnx(path, reference, inputs)
            info["checked"] = True
        except NotEquivalentError as exc:
            info["checked"] = True
            info["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - onnxruntime could not run the file
            info["checked"] = False
            info["error"] = f"onnxruntime could not run {path}: {oneline(exc)}"
    return info


def run(args: argparse.Namespace, ui: Terminal) -> int:
    out_path = output_path(args.output, "-o/--output")
    onnx_path = output_path(args.onnx, "--onnx")
    rules = rule_names(args.rules)
    loaded = steps.load(args, ui)
    if onnx_path is not None:
        steps.need_inputs(loaded, "--onnx")
    result = steps.deploy(loaded, args, ui, rules)
    payload: dict[str, Any] = {
        "model": loaded.name,
        "input_shapes": loaded.shapes(),
        "input_source": loaded.input_source,
        **result.report.to_dict(),
    }
    code = EXIT_OK
    failure: str | None = None
    if out_path is not None:
        with ui.step(f"saving {out_path}"):
            try:
                torch.save(result.model, out_path)
            except OSError as exc:
                raise CLIError(f"cannot write '{out_path}': {oneline(exc)}") from exc
            except Exception as exc:  # noqa: BLE001 - e.g. a model holding a lambda
                raise CLIError(
                    f"cannot save the deployed model to '{out_path}': {oneline(exc)}",
                    EXIT_FAILED,
                ) from exc
        payload["output"] = str(out_path)
    if onnx_path is not None:
        assert loaded.inputs is not None
        onnx_info = _export(result.model, loaded.model, loaded.inputs, onnx_path, args, ui)
        payload["onnx"] = onnx_info
        if "error" in onnx_info:
            code, failure = EXIT_FAILED, onnx_info["error"]
        elif "note" in onnx_info:
            ui.warn(onnx_info["note"])
    if ui.json:
        ui.emit_json(payload)
    else:
        ui.print(f"model: {loaded.name}")
        ui.print(f"input: {steps.describe_inputs(loaded)}")
        ui.print(
            result.report.render(
                width=ui.out.width, full=args.full, weight_ranges=args.weight_ranges
            ).rstrip("\n")
        )
        if out_path is not None:
            ui.print(
                f"saved the deployed model to {out_path} (load with "
                "torch.load(path, weights_only=False))"
            )
        if onnx_path is not None and "error" not in payload["onnx"]:
            info = payload["onnx"]
            checked = (
                f", onnxruntime matches (relative error {info['max_relative_error']:.2e})"
                if info.get("checked")
                else ""
            )
            ui.print(f"exported ONNX to {onnx_path} ({info['exporter']} exporter){checked}")
    if failure is not None:
        ui.error(failure)
    return code

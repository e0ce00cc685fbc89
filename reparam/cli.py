"""The ``reparam`` command line: deploy, explain, bench, list rules and zoo models.

Exit codes: 0 success, 1 the model could not be deployed exactly (or its export did not match),
2 bad arguments or input (missing or unloadable file, not an nn.Module, unknown model name).

The command line is a thin layer over the library: every subcommand loads a model, calls one
library function (:func:`reparam.deploy_with_report`, :func:`reparam.explain`, ...) and prints
the result as tables (stdout), with progress on stderr when stderr is a terminal. ``--json``
prints one JSON document on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130

_PATH_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar", ".safetensors", ".onnx")
_DEMO_NAME = "built-in demo (RepVGG / ACNet / MobileOne-style blocks)"


class CLIError(Exception):
    """A failure with a one-line message and an exit code (2: bad input, 1: deploy failed)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _oneline(exc: BaseException) -> str:
    """``Type: first line of the message`` (exception messages can span many lines)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# terminal output


class _UI:
    """Where things are printed: results on stdout, progress and errors on stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        from rich.console import Console

        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.err = Console(stderr=True, highlight=False)
        out = Console(highlight=False)
        self.out = out if out.is_terminal else Console(highlight=False, width=120)

    @property
    def live(self) -> bool:
        """Whether to animate progress (never into a pipe or a file, never with --quiet)."""
        return not self.quiet and self.err.is_terminal

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        """A spinner on stderr while the block runs."""
        if not self.live:
            yield
            return
        with self.err.status(text, spinner="dots"):
            yield

    def print(self, *objects: Any) -> None:
        if not self.json:
            self.out.print(*objects, markup=False, highlight=False)

    def emit_json(self, payload: Any) -> None:
        sys.stdout.write(json.dumps(_jsonable(payload), indent=2) + "\n")
        sys.stdout.flush()

    def error(self, message: str) -> None:
        # one plain line: never wrapped, never styled, so scripts can grep it
        print(f"reparam: error: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"reparam: warning: {message}", file=sys.stderr, flush=True)


def _jsonable(obj: Any) -> Any:
    """Plain JSON: tuples as lists, non-finite floats as strings ("inf", "nan")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)  # dtypes, devices, paths


def _table(title: str | None, columns: Sequence[str | tuple[str, str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    for col in columns:
        name, justify = col if isinstance(col, tuple) else (col, "left")
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    return table


def _text(value: Any) -> Any:
    """A table cell that is never read as rich markup (site names can hold brackets)."""
    from rich.text import Text

    return Text(str(value))


# --------------------------------------------------------------------------------------------
# arguments


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape: give positive integers separated by commas, e.g. 1,3,224,224"
        )
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a non-negative integer")
    return value


def _output_path(value: str | None, option: str) -> Path | None:
    """Check an output file can be written before spending minutes on the model."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise CLIError(f"{option} '{value}' is a folder, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"{option} '{value}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"{option} '{value}': folder '{parent}' is not writable")
    return path


def _rule_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    import reparam

    names = [n.strip() for n in value.split(",") if n.strip()]
    known = reparam.default_registry().names()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CLIError(
            f"--rules: unknown rule(s) {', '.join(repr(n) for n in unknown) or '(none given)'}; "
            f"known rules: {', '.join(known)}"
        )
    return names


# --------------------------------------------------------------------------------------------
# loading a model


@dataclass
class _Loaded:
    model: nn.Module
    name: str
    inputs: tuple[torch.Tensor, ...] | None
    input_source: str | None

    def shapes(self) -> list[list[int]] | None:
        return [list(x.shape) for x in self.inputs] if self.inputs else None


def _looks_like_path(spec: str) -> bool:
    return (
        "/" in spec or "\\" in spec or spec.startswith(".") or spec.lower().endswith(_PATH_SUFFIXES)
    )


def _import_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CLIError(f"'{spec}' is not package.module:factory")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: local modules are importable
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the import raises is bad input
        raise CLIError(
            f"cannot import module '{module_name}' for '{spec}': {_oneline(exc)}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"'{spec}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise CLIError(f"'{spec}' is a {type(obj).__name__}, not a model factory")
    try:
        model = obj()
    except Exception as exc:  # noqa: BLE001 - a failing factory is bad input
        raise CLIError(f"'{spec}' failed to build the model: {_oneline(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise CLIError(f"'{spec}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _zoo_model(name: str, option: str | None = None) -> nn.Module:
    import difflib

    import reparam_models

    if not reparam_models.is_model(name):
        close = difflib.get_close_matches(name, reparam_models.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        what = "not package.module:factory" if option else "not a file, not package.module:factory"
        raise CLIError(
            f"unknown {option or 'model'} '{name}': {what} and not a zoo "
            f"model{hint} (`reparam models` lists the zoo)"
        )
    try:
        return reparam_models.create_model(name)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"building zoo model '{name}' failed: {_oneline(exc)}") from exc


def _build(name: str) -> nn.Module:
    """An architecture from a zoo name or ``package.module:factory``."""
    return _import_factory(name) if ":" in name else _zoo_model(name, "--model")


def _load_file(path: Path) -> nn.Module:
    """A whole model saved with ``torch.save(model)`` (unpickled: load only trusted files)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is bad input
        if isinstance(exc, (AttributeError, ModuleNotFoundError, ImportError)):
            hint = " (the model's class must be importable where you run reparam)"
        else:
            hint = " (is it a file written by torch.save?)"
        raise CLIError(f"cannot load '{path}': {_oneline(exc)}{hint}") from exc
    if isinstance(obj, torch.jit.ScriptModule):
        raise CLIError(
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
        raise CLIError(
            f"'{path}' holds {kind} ({entries}), not a model: pass --model NAME "
            "(a zoo name or package.module:factory) to build the architecture to load it into"
        )
    if not isinstance(obj, nn.Module):
        raise CLIError(f"'{path}' holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_checkpoint(path: Path, arch: str) -> nn.Module:
    from reparam_models.checkpoint import load_reference_state_dict, read_checkpoint

    model = _build(arch)
    try:
        state_dict = read_checkpoint(path)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"cannot read a state_dict from '{path}': {_oneline(exc)}") from exc
    try:
        load_reference_state_dict(model, state_dict, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"'{path}' does not fit --model {arch}: {_oneline(exc)}") from exc
    return model


def _resolve(source: str | None, arch: str | None) -> tuple[nn.Module, str]:
    if source is None and arch is None:
        from reparam.demo import demo_model

        return demo_model()[0], _DEMO_NAME
    if source is None:
        assert arch is not None
        return _build(arch), arch
    path = Path(source)
    if path.exists():
        if path.is_dir():
            raise CLIError(f"'{source}' is a folder, not a model file")
        if arch is not None:
            return _load_checkpoint(path, arch), f"{arch} ({source})"
        return _load_file(path), source
    if arch is not None:
        raise CLIError(f"no such file: '{source}' (with --model, MODEL is the checkpoint to load)")
    if ":" in source and not _looks_like_path(source.partition(":")[0]):
        return _import_factory(source), source
    if _looks_like_path(source):
        raise CLIError(f"no such file: '{source}'")
    return _zoo_model(source), source


def _model_tensor_kind(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


def _load(args: argparse.Namespace, ui: _UI) -> _Loaded:
    from reparam.deploy import default_example_inputs

    label = args.source or args.arch or "the built-in demo"
    with ui.step(f"loading {label}"):
        model, name = _resolve(args.source, args.arch)
    if isinstance(model, torch.jit.ScriptModule):
        raise CLIError(f"'{name}' is a TorchScript module, which cannot be re-parameterized")
    inputs: tuple[torch.Tensor, ...] | None = None
    source: str | None = None
    if args.input_shape:
        dtype, device = _model_tensor_kind(model)
        gen = torch.Generator().manual_seed(0)
        inputs = tuple(
            torch.randn(s, generator=gen, dtype=dtype).to(device) for s in args.input_shape
        )
        source = "--input-shape"
    elif args.source is None and args.arch is None:
        from reparam.demo import demo_model

        inputs, source = (demo_model()[1],), "demo input"
    else:
        inputs = default_example_inputs(model)
        source = "pretrained_cfg['input_size']" if inputs else None
    if inputs:
        _probe(model, inputs, name)
    return _Loaded(model, name, inputs, source)


def _probe(model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> None:
    """Run the model once (eval mode, no grad) so a wrong input shape is a clear bad-input
    error rather than a failure deep inside deploy."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:  # noqa: BLE001
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise CLIError(
            f"'{name}' does not run on input {shapes}: {_oneline(exc)} "
            "(set the shape with --input-shape)"
        ) from exc
    finally:
        model.train(was_training)


def _need_inputs(loaded: _Loaded, what: str) -> tuple[torch.Tensor, ...]:
    if not loaded.inputs:
        raise CLIError(
            f"{what} needs an example input and '{loaded.name}' has no "
            "pretrained_cfg['input_size']: pass --input-shape, e.g. 1,3,224,224"
        )
    return loaded.inputs


def _describe_inputs(loaded: _Loaded) -> str:
    if not loaded.inputs:
        return "none (rules that need shapes do not fire; no numerical check)"
    shapes = ", ".join("×".join(str(d) for d in x.shape) for x in loaded.inputs)
    return f"{shapes} ({loaded.input_source})"


# --------------------------------------------------------------------------------------------
# deploy


def _deploy(loaded: _Loaded, args: argparse.Namespace, ui: _UI, rules: list[str] | None) -> Any:
    import reparam

    with ui.step(f"deploying {loaded.name}"):
        try:
            return reparam.deploy_with_report(
                loaded.model,
                loaded.inputs,
                rules=rules,
                verify=getattr(args, "verify", False),
                allow_slower=args.allow_slower,
            )
        except reparam.ReparamError as exc:
            raise CLIError(
                f"deploy of '{loaded.name}' failed: {_oneline(exc)}", EXIT_FAILED
            ) from exc
        except Exception as exc:  # noqa: BLE001
            if args.debug:
                raise
            raise CLIError(
                f"deploy of '{loaded.name}' failed: {_oneline(exc)} (--debug shows the traceback)",
                EXIT_FAILED,
            ) from exc


def _export(
    model: nn.Module,
    reference: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    args: argparse.Namespace,
    ui: _UI,
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
            info["error"] = f"onnxruntime could not run {path}: {_oneline(exc)}"
    return info


def cmd_deploy(args: argparse.Namespace, ui: _UI) -> int:
    out_path = _output_path(args.output, "-o/--output")
    onnx_path = _output_path(args.onnx, "--onnx")
    rules = _rule_names(args.rules)
    loaded = _load(args, ui)
    if onnx_path is not None:
        _need_inputs(loaded, "--onnx")
    result = _deploy(loaded, args, ui, rules)
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
                raise CLIError(f"cannot write '{out_path}': {_oneline(exc)}") from exc
            except Exception as exc:  # noqa: BLE001 - e.g. a model holding a lambda
                raise CLIError(f"cannot save the deployed model to '{out_path}': "
                               f"{_oneline(exc)}", EXIT_FAILED) from exc
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
        ui.print(f"input: {_describe_inputs(loaded)}")
        ui.print(result.report.render(width=ui.out.width))
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


# --------------------------------------------------------------------------------------------
# explain


def cmd_explain(args: argparse.Namespace, ui: _UI) -> int:
    import reparam

    rules = _rule_names(args.rules)
    loaded = _load(args, ui)
    with ui.step(f"analysing {loaded.name}"):
        try:
            explanation = reparam.explain(
                loaded.model, loaded.inputs, rules=rules, allow_slower=args.allow_slower
            )
        except Exception as exc:  # noqa: BLE001
            if args.debug:
                raise
            raise CLIError(
                f"explain of '{loaded.name}' failed: {_oneline(exc)}", EXIT_FAILED
            ) from exc
    if ui.json:
        ui.emit_json(
            {
                "model": loaded.name,
                "input_shapes": loaded.shapes(),
                "input_source": loaded.input_source,
                "sites": [
                    dict(rule=s.rule, site=s.site, fired=s.fired, reason=s.reason)
                    for s in explanation.sites
                ],
                "skipped_scopes": [
                    dict(scope=p or "<model>", reason=r) for p, r in explanation.skipped_scopes
                ],
            }
        )
        return EXIT_OK
    ui.print(f"model: {loaded.name}")
    ui.print(f"input: {_describe_inputs(loaded)}")
    table = _table(
        f"{len(explanation.fired())} merged, {len(explanation.refused())} refused",
        ["", "rule", "site", "what / why not"],
    )
    for s in explanation.sites:
        table.add_row(
            _text("merged" if s.fired else "refused"), _text(s.rule), _text(s.site), _text(s.reason)
        )
    if explanation.sites:
        ui.print(table)
    else:
        ui.print("no candidate sites")
    for path, reason in explanation.skipped_scopes:
        ui.print(f"skipped {path or '<model>'}: {reason}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# bench


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"--device '{name}' is not usable here: {_oneline(exc)}") from exc
    return device


def _with_batch(
    inputs: tuple[torch.Tensor, ...], batch: int | None, device: torch.device
) -> tuple[torch.Tensor, ...]:
    if batch is None:
        return tuple(x.to(device) for x in inputs)
    gen = torch.Generator().manual_seed(1)
    return tuple(
        torch.randn((batch, *x.shape[1:]), generator=gen, dtype=x.dtype).to(device)
        if x.dim() > 0 and x.is_floating_point()
        else x.to(device)
        for x in inputs
    )


def _time(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    warmup: int,
    runs: int,
    device: torch.device,
    tick: Callable[[], None],
) -> list[float]:
    """Seconds per forward, ``runs`` of them after ``warmup`` untimed ones."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
            tick()
        sync()
        for _ in range(runs):
            start = time.perf_counter()
            model(*inputs)
            sync()
            times.append(time.perf_counter() - start)
            tick()
    return times


def _stats(times: list[float], batch: int, params: int, flops: int | None) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "median_ms": median * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "samples_per_s": batch / median if median > 0 else None,
        "params": params,
        "flops": flops,
        "times_ms": [t * 1e3 for t in times],
    }


def cmd_bench(args: argparse.Namespace, ui: _UI) -> int:
    from reparam.report import count_flops, count_params
    from reparam.verify import relative_error, run

    device = _device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rules = _rule_names(args.rules)
    loaded = _load(args, ui)
    _need_inputs(loaded, "bench")
    result = _deploy(loaded, args, ui, rules)
    train = loaded.model.eval().to(device)
    deployed = result.model.eval().to(device)
    assert loaded.inputs is not None
    inputs = _with_batch(loaded.inputs, args.batch_size, device)
    batch = int(inputs[0].shape[0]) if inputs[0].dim() > 0 else 1
    with ui.step("counting FLOPs"):
        forms = (
            ("train-form", train, count_flops(train, inputs)),
            ("deployed", deployed, count_flops(deployed, inputs)),
        )
    timings: dict[str, dict[str, Any]] = {}
    per_form = args.warmup + args.runs
    progress_ctx: Any = contextlib.nullcontext(None)
    if ui.live:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress_ctx = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=ui.err,
            transient=True,
        )
    with progress_ctx as progress:
        for label, model, flops in forms:
            task = progress.add_task(f"timing {label}", total=per_form) if progress else None

            def tick(task: Any = task, progress: Any = progress) -> None:
                if progress is not None:
                    progress.advance(task)

            try:
                times = _time(model, inputs, args.warmup, args.runs, device, tick)
            except Exception as exc:  # noqa: BLE001
                if args.debug:
                    raise
                raise CLIError(
                    f"running the {label} model failed: {_oneline(exc)}", EXIT_FAILED
                ) from exc
            timings[label] = _stats(times, batch, count_params(model), flops)
    error = relative_error(run(train, inputs), run(deployed, inputs))
    train_ms, deployed_ms = timings["train-form"]["median_ms"], timings["deployed"]["median_ms"]
    speedup = train_ms / deployed_ms if deployed_ms > 0 else None
    payload = {
        "model": loaded.name,
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "batch_size": batch,
        "input_shapes": [list(x.shape) for x in inputs],
        "input_source": loaded.input_source,
        "warmup": args.warmup,
        "runs": args.runs,
        "train": timings["train-form"],
        "deployed": timings["deployed"],
        "speedup": speedup,
        "max_relative_error": error,
    }
    if ui.json:
        ui.emit_json(payload)
        return EXIT_OK
    n_threads = payload["threads"]
    threads = f", {n_threads} thread{'s' if n_threads != 1 else ''}" if n_threads else ""
    ui.print(f"model: {loaded.name}")
    ui.print(
        f"input: {', '.join('×'.join(map(str, x.shape)) for x in inputs)} on {device}"
        f"{threads}; median of {args.runs} runs after {args.warmup} warm-up runs"
    )
    table = _table(
        "latency",
        [
            "form",
            ("params", "right"),
            ("FLOPs", "right"),
            ("median ms", "right"),
            ("min ms", "right"),
            ("max ms", "right"),
            ("samples/s", "right"),
        ],
    )
    for label, stats in timings.items():
        table.add_row(
            label,
            f"{stats['params']:,}",
            f"{stats['flops']:,}" if stats["flops"] is not None else "-",
            f"{stats['median_ms']:.3f}",
            f"{stats['min_ms']:.3f}",
            f"{stats['max_ms']:.3f}",
            f"{stats['samples_per_s']:,.1f}" if stats["samples_per_s"] else "-",
        )
    ui.print(table)
    if speedup is not None:
        word = "faster" if speedup >= 1 else "slower"
        factor = speedup if speedup >= 1 else 1 / speedup
        ui.print(
            f"deployed / train-form median latency ratio {1 / speedup:.3f}: the deployed "
            f"model is {factor:.2f}× {word} (relative output error {error:.2e})"
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# rules, models


def cmd_rules(args: argparse.Namespace, ui: _UI) -> int:
    import reparam

    rules = reparam.list_rules()
    if ui.json:
        ui.emit_json(
            [
                {
                    "name": r.name,
                    "summary": r.summary,
                    "pattern": r.pattern,
                    "refuses_when": list(r.refuses_when),
                }
                for r in rules
            ]
        )
        return EXIT_OK
    table = _table(
        f"{len(rules)} rules, tried in this order", ["rule", "merges", "pattern", "refuses when"]
    )
    for r in rules:
        table.add_row(
            _text(r.name),
            _text(r.summary),
            _text(r.pattern),
            _text("\n".join(f"• {w}" for w in r.refuses_when)),
        )
    ui.print(table)
    return EXIT_OK


def _zoo_rows(names: list[str], ui: _UI) -> list[dict[str, Any]]:
    """Parameter counts of both forms, built on the meta device (no memory, no init cost)."""
    import reparam_models
    from reparam.report import count_params

    rows = []
    with ui.step(f"building {len(names)} model(s) on the meta device"):
        for name in names:
            with torch.device("meta"):
                train = reparam_models.create_model(name)
                infer = reparam_models.create_model(name, inference=True)
            cfg = getattr(train, "pretrained_cfg", None) or {}
            size = cfg.get("input_size") if isinstance(cfg, dict) else None
            rows.append(
                {
                    "name": name,
                    "input_size": list(size) if size else None,
                    "params": count_params(train),
                    "params_inference_form": count_params(infer),
                    "class": type(train).__name__,
                }
            )
    return rows


def cmd_models(args: argparse.Namespace, ui: _UI) -> int:
    import reparam_models

    names = reparam_models.list_models(args.pattern)
    if not names:
        raise CLIError(f"no zoo model matches '{args.pattern}' (`reparam models` lists them all)")
    rows = _zoo_rows(names, ui)
    if ui.json:
        ui.emit_json(rows)
        return EXIT_OK
    table = _table(
        f"{len(rows)} zoo models (reparam_models)",
        ["name", "class", "input", ("params", "right"), ("params, inference form", "right")],
    )
    for r in rows:
        size = "×".join(map(str, r["input_size"])) if r["input_size"] else "-"
        table.add_row(
            _text(r["name"]),
            _text(r["class"]),
            size,
            f"{r['params']:,}",
            f"{r['params_inference_form']:,}",
        )
    ui.print(table)
    ui.print(
        "deploy one with `reparam deploy NAME`, or a trained checkpoint with "
        "`reparam deploy CHECKPOINT --model NAME`"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# parser, entry point


_EPILOG = """\
MODEL is a zoo name (see `reparam models`), package.module:factory, or a file saved with
torch.save(model) (unpickled: load only files you trust); a state_dict checkpoint needs
--model NAME to build the architecture. Without MODEL the built-in demo network is used.

exit codes: 0 done, 1 not deployable exactly (or the ONNX file does not match),
2 bad arguments or input (missing or unloadable file, not an nn.Module, unknown name)."""


def build_parser() -> argparse.ArgumentParser:
    import reparam

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (and nothing else there)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )

    model_opts = argparse.ArgumentParser(add_help=False)
    model_opts.add_argument(
        "source",
        nargs="?",
        metavar="MODEL",
        help="zoo name, package.module:factory, or a saved model or "
        "checkpoint file (default: the built-in demo)",
    )
    model_opts.add_argument(
        "--model",
        dest="arch",
        metavar="NAME",
        help="architecture (zoo name or package.module:factory) to build "
        "and load the state_dict checkpoint MODEL into",
    )
    model_opts.add_argument(
        "--input-shape",
        type=_shape,
        action="append",
        metavar="SHAPE",
        help="example input shape, e.g. 1,3,224,224 (repeat for several "
        "inputs; default: the model's pretrained_cfg['input_size'])",
    )
    model_opts.add_argument(
        "--rules", metavar="R1,R2", help="use only these rules (names from `reparam rules`)"
    )
    model_opts.add_argument(
        "--allow-slower", action="store_true", help="apply merges the cost model says are slower"
    )

    parser = argparse.ArgumentParser(
        prog="reparam",
        description="Structural re-parameterization: merge training-time multi-branch "
        "structures into plain convs and FCs, exactly.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reparam {reparam.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, help_: str, func: Callable[..., int], parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            parents=parents,
            epilog=_EPILOG if model_opts in parents else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add("deploy", "deploy a model and print the report", cmd_deploy, [model_opts, common])
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

    add(
        "explain",
        "say for every candidate site which rule merged it or why not",
        cmd_explain,
        [model_opts, common],
    )

    p = add(
        "bench",
        "time the train-form model against the deployed one",
        cmd_bench,
        [model_opts, common],
    )
    p.add_argument(
        "-b",
        "--batch-size",
        type=_positive,
        metavar="N",
        help="batch size of the timed input (default: that of the input shape)",
    )
    p.add_argument(
        "-n",
        "--runs",
        type=_positive,
        default=30,
        metavar="N",
        help="timed runs per form; the median is reported (default: 30)",
    )
    p.add_argument(
        "-w",
        "--warmup",
        type=_non_negative,
        default=5,
        metavar="N",
        help="untimed warm-up runs per form (default: 5)",
    )
    p.add_argument(
        "--device", metavar="DEV", help="cpu, cuda, cuda:1, ... (default: cuda when available)"
    )
    p.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="CPU threads for torch (torch.set_num_threads)",
    )

    add("rules", "list the registered merge rules", cmd_rules, [common])
    p = add(
        "models",
        "list the zoo models (reparam_models) with their parameter counts",
        cmd_models,
        [common],
    )
    p.add_argument(
        "pattern", nargs="?", metavar="PATTERN", help="shell-style filter, e.g. 'repmlpnet_*'"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    ui = _UI(args)
    try:
        return int(args.func(args, ui))
    except CLIError as err:
        ui.error(str(err))
        if ui.json:
            ui.emit_json({"error": str(err), "exit_code": err.code})
        return err.code
    except KeyboardInterrupt:
        ui.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - no traceback unless asked for
        if getattr(args, "debug", False):
            raise
        ui.error(f"unexpected {_oneline(exc)} (rerun with --debug for the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

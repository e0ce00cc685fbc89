"""``reparam bench``: time the train-form model against the deployed one, interleaved, and say
when the timings are too noisy to trust."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reparam.cli import steps
from reparam.cli.errors import EXIT_FAILED, EXIT_OK, CLIError, oneline
from reparam.cli.options import non_negative, positive, rule_names
from reparam.cli.terminal import Terminal, table
from reparam.timing import NOISY_IQR, Timing, time_interleaved

HELP = "time the train-form model against the deployed one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-b",
        "--batch-size",
        type=positive,
        metavar="N",
        help="batch size of the timed input (default: that of the input shape)",
    )
    p.add_argument(
        "-n",
        "--runs",
        type=positive,
        default=30,
        metavar="N",
        help="timed runs per form, interleaved; the median is reported (default: 30)",
    )
    p.add_argument(
        "-w",
        "--warmup",
        type=non_negative,
        default=5,
        metavar="N",
        help="untimed warm-up runs per form (default: 5)",
    )
    p.add_argument(
        "--device", metavar="DEV", help="cpu, cuda, cuda:1, ... (default: cuda when available)"
    )
    p.add_argument(
        "--threads",
        type=positive,
        metavar="N",
        help="CPU threads for torch (torch.set_num_threads)",
    )


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"--device '{name}' is not usable here: {oneline(exc)}") from exc
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


class _FormFailed(Exception):
    def __init__(self, label: str, exc: BaseException) -> None:
        super().__init__(label)
        self.label, self.exc = label, exc


def _caller(label: str, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return model(*inputs)
        except Exception as exc:  # noqa: BLE001 - said with the form's name below
            raise _FormFailed(label, exc) from exc

    return call


def _stats(timing: Timing, batch: int, params: int, flops: int | None) -> dict[str, Any]:
    median = timing.median
    return {
        "median_ms": median * 1e3,
        "min_ms": timing.min * 1e3,
        "max_ms": timing.max * 1e3,
        "iqr_ms": timing.iqr * 1e3,
        "iqr_over_median": timing.iqr_ratio,
        "noisy": timing.noisy(),
        "samples_per_s": batch / median if median > 0 else None,
        "params": params,
        "flops": flops,
        "times_ms": [t * 1e3 for t in timing.samples],
    }


def _noise_warning(timings: dict[str, dict[str, Any]]) -> str | None:
    noisy = [
        f"{label} IQR {s['iqr_over_median']:.0%} of the median"
        for label, s in timings.items()
        if s["noisy"]
    ]
    if not noisy:
        return None
    return (
        f"noisy timings ({'; '.join(noisy)}; above {NOISY_IQR:.0%}): other work on the machine "
        "disturbs them; close it, pin --threads, or raise --runs"
    )


def run(args: argparse.Namespace, ui: Terminal) -> int:
    from reparam.report import count_flops, count_params
    from reparam.verify import relative_error
    from reparam.verify import run as run_model

    device = _device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rules = rule_names(args.rules)
    loaded = steps.load(args, ui)
    steps.need_inputs(loaded, "bench")
    result = steps.deploy(loaded, args, ui, rules)
    train = loaded.model.eval().to(device)
    deployed = result.model.eval().to(device)
    assert loaded.inputs is not None
    inputs = _with_batch(loaded.inputs, args.batch_size, device)
    batch = int(inputs[0].shape[0]) if inputs[0].dim() > 0 else 1
    with ui.step("counting FLOPs"):
        forms = {
            "train-form": (train, count_flops(train, inputs)),
            "deployed": (deployed, count_flops(deployed, inputs)),
        }
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
    with progress_ctx as progress, torch.inference_mode():
        task = (
            progress.add_task(
                "timing train-form and deployed, interleaved", total=2 * (args.warmup + args.runs)
            )
            if progress
            else None
        )
        try:
            measured = time_interleaved(
                [_caller(label, model, inputs) for label, (model, _) in forms.items()],
                runs=args.runs,
                warmup=args.warmup,
                device=device,
                on_call=(lambda: progress.advance(task)) if progress else None,
            )
        except _FormFailed as failed:
            if args.debug:
                raise failed.exc from None
            raise CLIError(
                f"running the {failed.label} model failed: {oneline(failed.exc)}", EXIT_FAILED
            ) from failed.exc
    timings = {
        label: _stats(timing, batch, count_params(model), flops)
        for (label, (model, flops)), timing in zip(forms.items(), measured, strict=True)
    }
    error = relative_error(run_model(train, inputs), run_model(deployed, inputs))
    train_ms, deployed_ms = timings["train-form"]["median_ms"], timings["deployed"]["median_ms"]
    speedup = train_ms / deployed_ms if deployed_ms > 0 else None
    warning = _noise_warning(timings)
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
        "noisy": warning is not None,
        "max_relative_error": error,
    }
    if warning is not None:
        ui.warn(warning)
    if ui.json:
        ui.emit_json(payload)
        return EXIT_OK
    n_threads = payload["threads"]
    threads = f", {n_threads} thread{'s' if n_threads != 1 else ''}" if n_threads else ""
    ui.print(f"model: {loaded.name}")
    ui.print(
        f"input: {', '.join('×'.join(map(str, x.shape)) for x in inputs)} on {device}"
        f"{threads}; median of {args.runs} interleaved runs after {args.warmup} warm-up runs"
    )
    latency = table(
        "latency",
        [
            "form",
            ("params", "right"),
            ("FLOPs", "right"),
            ("median ms", "right"),
            ("min ms", "right"),
            ("max ms", "right"),
            ("IQR/median", "right"),
            ("samples/s", "right"),
        ],
    )
    for label, stats in timings.items():
        latency.add_row(
            label,
            f"{stats['params']:,}",
            f"{stats['flops']:,}" if stats["flops"] is not None else "-",
            f"{stats['median_ms']:.3f}",
            f"{stats['min_ms']:.3f}",
            f"{stats['max_ms']:.3f}",
            f"{stats['iqr_over_median']:.1%}" + (" noisy" if stats["noisy"] else ""),
            f"{stats['samples_per_s']:,.1f}" if stats["samples_per_s"] else "-",
        )
    ui.print(latency)
    if speedup is not None:
        word = "faster" if speedup >= 1 else "slower"
        factor = speedup if speedup >= 1 else 1 / speedup
        ui.print(
            f"deployed / train-form median latency ratio {1 / speedup:.3f}: the deployed "
            f"model is {factor:.2f}× {word} (relative output error {error:.2e})"
        )
    return EXIT_OK

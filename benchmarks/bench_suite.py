"""Benchmark suite: latency before/after deploy, conversion time against timm's own conversion
and torch.fx's conv+BN fusion, and conversion time against depth. One run writes one table
(markdown and JSON) and three plots (PNG).

Sections, all measured in the same process so that their ratios compare like with like:

a. latency at batch 1 (median of interleaved runs under ``torch.inference_mode``) of the
   training-time model, of ``reparam.deploy``'s result, of timm's
   ``timm.utils.model.reparameterize_model`` result (timm models) and of
   ``torch.fx.experimental.optimization.fuse``'s result, for timm's repvgg_a0, mobileone_s0,
   fastvit_t8 and repvit_m0_9 (random weights, trained-looking batch norms), the built-in demo
   network and a RepMLPNet-T at 64x64;
b. conversion time of the same three converters on the same models (median of interleaved
   repeats; ``reparam.deploy`` with ``check=False`` and the example input), the batch norms
   each result still executes (``F.batch_norm`` calls in one forward, counted at the
   torch-function level), and each result's relative error against the training-time model.
   ``fx fuse`` only folds a BatchNorm into the conv right before it, and needs the whole
   model to trace: where tracing fails the reason is given;
c. conversion time against depth: stacks of 8/16/32/64/128 RepVGG-style blocks
   (``reparam.demo.RepVGGStyleBlock``, 16 channels, 32x32 input), ``reparam.deploy`` and
   ``fx fuse``, with a least-squares line ``seconds = a + b * blocks`` per converter.

Calls being compared are interleaved, and the order rotates every round, so load from other
processes falls on all of them alike. The first conversion of each kind in the process is a
warm-up and is not timed.

Usage::

    python benchmarks/bench_suite.py              # default run (< 10 min on 2 busy cores)
    python benchmarks/bench_suite.py --quick      # fewer repeats and runs (< 2 min)
    python benchmarks/bench_suite.py --out DIR    # default bench_out/

Writes ``results.md``, ``results.json``, ``latency.png``, ``conversion.png`` and ``depth.png``
into the output folder and prints the markdown. Without timm the timm models and timm's
converter are left out.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _machine import cpu_model
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse
from torch.overrides import TorchFunctionMode

# reparam_models registers its zoo with timm; timm's own resnet50 keeps its name (expected).
warnings.filterwarnings("ignore", message="timm already has a model named")

import reparam  # noqa: E402
import reparam_models  # noqa: E402
from reparam.demo import DemoNet, RepVGGStyleBlock, randomize_batch_norms  # noqa: E402
from reparam.timing import time_interleaved  # noqa: E402

try:
    import timm
    from timm.utils.model import reparameterize_model as timm_reparameterize
except ImportError:  # the suite still runs: our models and the depth section
    timm = None
    timm_reparameterize = None

TIMM_MODELS = ("repvgg_a0", "mobileone_s0", "fastvit_t8", "repvit_m0_9")
DEPTHS = (8, 16, 32, 64, 128)
STACK_CHANNELS = 16
STACK_SPATIAL = 32
METHODS = ("reparam", "timm", "fx")
METHOD_LABELS = {
    "train": "train form",
    "reparam": "reparam.deploy",
    "timm": "timm reparameterize_model",
    "fx": "fx fuse",
}


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": getattr(timm, "__version__", None),
        "reparam": reparam.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(m: dict[str, Any]) -> str:
    load = (
        "n/a"
        if m["load_average_1_5_15"] is None
        else "/".join(f"{v:.2f}" for v in m["load_average_1_5_15"])
    )
    timm_txt = f", timm {m['timm']}" if m["timm"] else ", no timm"
    return (
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {m['torch_threads']} torch thread(s), "
        f"load {load} (1/5/15 min, at the end); torch {m['torch']}{timm_txt}, "
        f"reparam {m['reparam']}, Python {m['python']}; {m['date']}"
    )


# --------------------------------------------------------------------------- models


@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    is_timm: bool


def timm_case(name: str, size: int) -> Case:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    randomize_batch_norms(model, 0).eval()
    return Case(name, model, torch.randn(1, 3, size, size), True)


def demo_case(size: int) -> Case:
    torch.manual_seed(0)
    model = randomize_batch_norms(DemoNet(), 0).eval()
    return Case(f"demo net @{size}", model, torch.randn(1, 3, size, size), False)


def repmlpnet_case() -> Case:
    """RepMLPNet-T (widths, depths and share sets of T224) designed for 64x64 inputs."""
    torch.manual_seed(0)
    model = reparam_models.create_model("repmlpnet_t224", img_size=64, hs=(16, 8, 4, 2))
    randomize_batch_norms(model, 0).eval()
    return Case("repmlpnet_t @64", model, torch.randn(1, 3, 64, 64), False)


def repvgg_stack(n_blocks: int) -> nn.Module:
    torch.manual_seed(0)
    stack = nn.Sequential(*[RepVGGStyleBlock(STACK_CHANNELS) for _ in range(n_blocks)])
    return randomize_batch_norms(stack, 0).eval()


# --------------------------------------------------------------------------- measuring


class NormCounter(TorchFunctionMode):
    """Counts batch-norm and other norm calls executed at the torch-function level. Inside a
    handler the mode is off, so an ``F.batch_norm`` calling ``torch.batch_norm`` counts once."""

    BATCH = {F.batch_norm, torch.batch_norm}
    OTHER = {F.layer_norm, F.group_norm, F.instance_norm, torch.layer_norm, torch.group_norm}

    def __init__(self) -> None:
        super().__init__()
        self.batch_norms = 0
        self.other_norms = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.BATCH:
            self.batch_norms += 1
        elif func in self.OTHER:
            self.other_norms += 1
        return func(*args, **(kwargs or {}))


def executed_norms(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    counter = NormCounter()
    with torch.inference_mode(), counter:
        model(x)
    return counter.batch_norms, counter.other_norms


def rel_err(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        return reparam.relative_error(reference(x), candidate(x))


def interleaved(fns: Sequence[Callable[[], Any]], rounds: int, warmup: int) -> list[list[float]]:
    """Seconds per call of each fn over ``rounds`` rounds; the order rotates every round."""
    with torch.inference_mode():
        timings = time_interleaved(fns, runs=rounds, warmup=warmup)
    return [list(t.samples) for t in timings]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def converters(
    case: Case, has_timm: bool, reports: list[Any]
) -> dict[str, Callable[[], nn.Module]]:
    """The converters that apply to ``case``; each returns a new model, the input untouched.
    ``reports`` receives the report of every ``reparam.deploy`` call."""

    def deploy() -> nn.Module:
        result = reparam.deploy_with_report(case.model, case.x, check=False)
        reports.append(result.report)
        return result.model

    fns: dict[str, Callable[[], nn.Module]] = {"reparam": deploy}
    if case.is_timm and has_timm:
        fns["timm"] = lambda: timm_reparameterize(case.model)
    fns["fx"] = lambda: fx_fuse(case.model)
    return fns


def timed_conversions(
    fns: dict[str, Callable[[], nn.Module]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, nn.Module], dict[str, str]]:
    """Interleaved, rotating repeats of every converter: (seconds, last result, failures)."""
    names = list(fns)
    results: dict[str, nn.Module] = {}
    failed: dict[str, str] = {}

    def attempt(name: str) -> Callable[[], None]:
        def call() -> None:
            if name in failed:
                return
            try:
                results[name] = fns[name]()
            except Exception as exc:  # fx fuse cannot trace every model: say why
                failed[name] = one_line(exc)

        return call

    gc.collect()  # and after every call (on_call), outside the timed region
    timings = time_interleaved(
        [attempt(n) for n in names], runs=repeats, warmup=0, on_call=gc.collect
    )
    seconds = {
        n: [] if n in failed else list(t.samples) for n, t in zip(names, timings, strict=True)
    }
    return seconds, results, failed


def warm_up_converters() -> None:
    """One-time costs (imports, caches) of each converter, paid before anything is timed."""
    x = torch.randn(1, STACK_CHANNELS, STACK_SPATIAL, STACK_SPATIAL)
    stack = repvgg_stack(2)
    reparam.deploy(stack, x, check=False)
    fx_fuse(stack)
    if timm is not None:
        timm_reparameterize(timm.create_model("repvgg_a0", pretrained=False))


# --------------------------------------------------------------------------- sections


def bench_models(
    cases: Sequence[Case], repeats: int, runs: int, warmup: int, has_timm: bool, log
) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        log(f"  {case.name}: converting ({repeats} repeats) ...")
        reports: list[Any] = []
        secs, results, failed = timed_conversions(converters(case, has_timm, reports), repeats)
        bn_train, other_train = executed_norms(case.model, case.x)
        report = reports[-1] if reports else None
        left: dict[str, int] = {}
        for _, why in report.unfolded_norms if report else ():
            left[why] = left.get(why, 0) + 1
        row: dict[str, Any] = {
            "model": case.name,
            "input": list(case.x.shape),
            "params": sum(p.numel() for p in case.model.parameters()),
            "batch_norms": {"train": bn_train},
            "other_norms": {"train": other_train},
            "conversion_s": {},
            "conversion_samples_s": secs,
            "relative_error": {},
            "failed": failed,
            "latency_ms": {},
            "latency_samples_ms": {},
            "reparam_rules_fired": report.fired() if report else {},
            "reparam_report_seconds": [r.seconds for r in reports],
            "reparam_unfolded_norms": left,
        }
        for name, model in results.items():
            row["conversion_s"][name] = statistics.median(secs[name])
            bn, other = executed_norms(model, case.x)
            row["batch_norms"][name] = bn
            row["other_norms"][name] = other
            row["relative_error"][name] = rel_err(case.model, model, case.x)
        forms = {"train": case.model, **results}
        log(f"  {case.name}: latency ({runs} interleaved rounds of {len(forms)} forms) ...")
        samples = interleaved([lambda m=m, x=case.x: m(x) for m in forms.values()], runs, warmup)
        for name, s in zip(forms, samples, strict=True):
            row["latency_ms"][name] = statistics.median(s) * 1e3
            row["latency_samples_ms"][name] = [v * 1e3 for v in s]
        rows.append(row)
        del results, forms
        gc.collect()
    return rows


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least squares ``y = a + b x`` and its R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"intercept_s": a, "slope_s_per_block": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1}


def bench_depth(depths: Sequence[int], repeats: int, log) -> dict[str, Any]:
    x = torch.randn(1, STACK_CHANNELS, STACK_SPATIAL, STACK_SPATIAL)
    rows = []
    for n in depths:
        log(f"  {n} blocks ...")
        stack = repvgg_stack(n)
        fns = {
            "reparam": lambda s=stack: reparam.deploy(s, x, check=False),
            "fx": lambda s=stack: fx_fuse(s),
        }
        secs, results, failed = timed_conversions(fns, repeats)
        if failed:
            raise RuntimeError(f"conversion of a {n}-block stack failed: {failed}")
        rows.append(
            {
                "blocks": n,
                "seconds": {k: statistics.median(v) for k, v in secs.items()},
                "samples_s": secs,
                "batch_norms": {
                    "train": executed_norms(stack, x)[0],
                    **{k: executed_norms(m, x)[0] for k, m in results.items()},
                },
                "relative_error": {k: rel_err(stack, m, x) for k, m in results.items()},
            }
        )
    fits = {
        k: linear_fit([r["blocks"] for r in rows], [r["seconds"][k] for r in rows])
        for k in ("reparam", "fx")
    }
    return {"input": list(x.shape), "rows": rows, "fit": fits}


# --------------------------------------------------------------------------- output


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def render_markdown(result: dict[str, Any]) -> str:
    out = [
        f"Machine: {machine_line(result['machine'])}",
        "",
        f"Command: `{result['command']}` ({result['mode']} run, {result['runs']} latency "
        f"rounds after {result['warmup']} warm-up, median of {result['repeats']} conversions, "
        f"total {result['total_seconds']:.0f} s)",
        "",
        "**a. Latency, batch 1, ms** (median of interleaved runs; speed-up = train form / "
        "deployed)",
        "",
        "| model | input | train form | reparam.deploy | timm reparameterize | fx fuse "
        "| speed-up | reparam / timm | reparam / fx |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["models"]:
        lat = r["latency_ms"]
        size = "x".join(map(str, r["input"][2:]))
        out.append(
            f"| {r['model']} | {size} | {_ms(lat['train'])} | {_ms(lat.get('reparam'))} "
            f"| {_ms(lat.get('timm'))} | {_ms(lat.get('fx'))} "
            f"| {_ratio(lat['train'], lat.get('reparam'))}x "
            f"| {_ratio(lat.get('reparam'), lat.get('timm'))} "
            f"| {_ratio(lat.get('reparam'), lat.get('fx'))} |"
        )
    out += [
        "",
        "**b. Conversion time, s** (median of interleaved repeats), and batch norms still "
        "executed in one forward (train form → reparam / timm / fx)",
        "",
        "| model | reparam.deploy | timm reparameterize | fx fuse | reparam / timm "
        "| reparam / fx | BNs: train → reparam / timm / fx | rel. error reparam / timm / fx |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    notes = []
    for r in result["models"]:
        conv, bn, err = r["conversion_s"], r["batch_norms"], r["relative_error"]

        def cell(d: dict[str, Any], k: str, fmt: Callable[[Any], str], r=r) -> str:
            if k in r["failed"]:
                return "failed"
            return fmt(d[k]) if k in d else "—"

        bns = " / ".join(cell(bn, k, str) for k in METHODS)
        errs = " / ".join(cell(err, k, lambda v: f"{v:.0e}") for k in METHODS)
        out.append(
            f"| {r['model']} | {cell(conv, 'reparam', _s)} | {cell(conv, 'timm', _s)} "
            f"| {cell(conv, 'fx', _s)} | {_ratio(conv.get('reparam'), conv.get('timm'))} "
            f"| {_ratio(conv.get('reparam'), conv.get('fx'))} "
            f"| {bn['train']} → {bns} | {errs} |"
        )
        for k, why in r["failed"].items():
            notes.append(f"{r['model']}: {METHOD_LABELS[k]} failed: `{why}`")
        for why, count in r["reparam_unfolded_norms"].items():
            notes.append(f'{r["model"]}: reparam.deploy left {count} norm(s): "{why}"')
        if bn.get("fx") == bn["train"] and bn["train"]:
            notes.append(
                f"{r['model']}: fx fuse folded none of its {bn['train']} batch norms (it only "
                "matches an exact `nn.Conv2d` module followed by an exact `nn.BatchNorm2d` "
                "module)"
            )
        others = {k: v for k, v in r["other_norms"].items() if v}
        if others:
            notes.append(
                f"{r['model']}: also executes other norm ops (layer/group norm), not foldable "
                f"into a conv: {', '.join(f'{METHOD_LABELS[k]} {v}' for k, v in others.items())}"
            )
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    out.append("")
    out.append("— : not applicable (timm's converter only knows timm's modules).")

    depth = result["depth"]
    shape = "x".join(map(str, depth["input"]))
    out += [
        "",
        f"**c. Conversion time against depth, s** (RepVGG-style blocks, input {shape})",
        "",
        "| blocks | reparam.deploy | ms / block | fx fuse | reparam / fx "
        "| BNs: train → reparam / fx |",
        "|--:|--:|--:|--:|--:|---|",
    ]
    for r in depth["rows"]:
        s, bn = r["seconds"], r["batch_norms"]
        out.append(
            f"| {r['blocks']} | {_s(s['reparam'])} | {s['reparam'] / r['blocks'] * 1e3:.1f} "
            f"| {_s(s['fx'])} | {_ratio(s['reparam'], s['fx'])} "
            f"| {bn['train']} → {bn['reparam']} / {bn['fx']} |"
        )
    out.append("")
    for k in ("reparam", "fx"):
        f = depth["fit"][k]
        out.append(
            f"- {METHOD_LABELS[k]}: seconds = {f['intercept_s']:.4f} + "
            f"{f['slope_s_per_block'] * 1e3:.2f} ms × blocks (R² = {f['r2']:.4f})"
        )
    return "\n".join(out)


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"train": "#9e9e9e", "reparam": "#3f51b5", "timm": "#ff9800", "fx": "#4caf50"}
    rows = result["models"]
    names = [r["model"] for r in rows]
    written = []
    subtitle = machine_line(result["machine"]).split(";")[0]

    def bars(ax, key: str, methods: Sequence[str]) -> None:
        width = 0.8 / len(methods)
        for j, k in enumerate(methods):
            xs, ys = [], []
            for i, r in enumerate(rows):
                if k in r[key]:
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    ys.append(r[key][k])
            ax.bar(xs, ys, width, label=METHOD_LABELS[k], color=colors[k])
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars(ax, "latency_ms", ("train", *METHODS))
    ax.set_ylabel("latency, batch 1 (ms, median)")
    ax.set_title("Train form vs deployed", fontsize=11)
    fig.text(0.01, 0.01, subtitle, fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    written.append(out / "latency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars(ax, "conversion_s", METHODS)
    ax.set_yscale("log")
    ax.set_ylabel("conversion time (s, median, log scale)")
    ax.set_title("Conversion time", fontsize=11)
    fig.text(0.01, 0.01, subtitle, fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    written.append(out / "conversion.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    depth = result["depth"]
    blocks = [r["blocks"] for r in depth["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, k in zip(axes, ("reparam", "fx"), strict=True):
        ys = [r["seconds"][k] for r in depth["rows"]]
        lo = [y - min(r["samples_s"][k]) for y, r in zip(ys, depth["rows"], strict=True)]
        hi = [max(r["samples_s"][k]) - y for y, r in zip(ys, depth["rows"], strict=True)]
        f = depth["fit"][k]
        ax.errorbar(
            blocks,
            ys,
            yerr=[lo, hi],
            fmt="o",
            color=colors[k],
            capsize=3,
            label="median (bars: min-max)",
        )
        line = [f["intercept_s"] + f["slope_s_per_block"] * b for b in (0, max(blocks))]
        ax.plot(
            (0, max(blocks)),
            line,
            "-",
            color=colors[k],
            alpha=0.6,
            label=f"{f['slope_s_per_block'] * 1e3:.2f} ms/block + {f['intercept_s']:.3f} s"
            f"  (R²={f['r2']:.3f})",
        )
        ax.set_title(METHOD_LABELS[k], fontsize=10)
        ax.set_xlabel("RepVGG-style blocks")
        ax.set_ylabel("conversion time (s)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.text(0.01, 0.01, subtitle, fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    written.append(out / "depth.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_out", help="output folder (default bench_out/)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and runs, < 2 min")
    parser.add_argument("--size", type=int, default=224, help="timm models' input size")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--runs", type=int, help="latency rounds per model")
    parser.add_argument("--repeats", type=int, help="conversions per model and converter")
    parser.add_argument("--no-timm", action="store_true", help="leave timm out")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.quick:
        runs, warmup, repeats, depth_repeats = 10, 2, 1, 1
    else:
        runs, warmup, repeats, depth_repeats = 100, 10, 5, 5
    runs = args.runs or runs
    repeats = args.repeats or repeats
    depth_repeats = args.repeats or depth_repeats
    has_timm = timm is not None and not args.no_timm
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    log("warming up the converters ...")
    warm_up_converters()
    cases = [timm_case(n, args.size) for n in TIMM_MODELS] if has_timm else []
    cases += [demo_case(64), repmlpnet_case()]
    log("a+b. models")
    models = bench_models(cases, repeats, runs, warmup, has_timm, log)
    log("c. depth")
    depth = bench_depth(DEPTHS, depth_repeats, log)
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_suite.py", *argv]),
        "mode": "quick" if args.quick else "default",
        "runs": runs,
        "warmup": warmup,
        "repeats": repeats,
        "depth_repeats": depth_repeats,
        "models": models,
        "depth": depth,
        "total_seconds": time.perf_counter() - start,
        "machine": machine(),
    }
    text = render_markdown(result)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    pngs = plot(result, out)
    print(text)
    print()
    print("wrote " + ", ".join(str(p) for p in [out / "results.md", out / "results.json", *pngs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

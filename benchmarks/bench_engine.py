"""Benchmark of the reparam engine: conversion time, and latency before/after deploy.

Three measurements, all taken in one run so that their ratios compare like with like:

1. conversion time of ``reparam.deploy`` (``check=False``, with example inputs) on stacks of
   RepVGG-style blocks of growing depth: seconds, seconds per block, and the growth ratio
   ``(t_deepest / t_shallowest) * (n_shallowest / n_deepest)`` (1.0 = linear growth);
2. latency (median over N runs after a warm-up, under ``torch.inference_mode``) of the
   training-time model and of the deployed one, at batch 1 and 8, on the demo network and
   on the 32-block stack;
3. latency of the deployed 32-block stack against the same network written by hand as a
   plain ``Conv2d(bias=True) + ReLU`` stack holding the deployed weights. The two should run
   equally fast (ratio 1.00 within noise): anything else is overhead the engine adds.

Timed calls of the models being compared are interleaved (A, B, A, B ...) so that load from
other processes falls on both alike.

Usage::

    python benchmarks/bench_engine.py            # default sizes (< 3 min on 2 busy cores)
    python benchmarks/bench_engine.py --quick    # smaller sizes (< 30 s)
    python benchmarks/bench_engine.py --json out.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from _machine import cpu_model
from torch import nn

import reparam
from reparam.demo import DemoNet, RepVGGStyleBlock, randomize_batch_norms
from reparam.timing import time_interleaved

CHANNELS = 16
SPATIAL = 32
STACK_FOR_LATENCY = 32


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except (OSError, AttributeError):
        load = None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_1_5_15": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "reparam": reparam.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- models


def repvgg_stack(n_blocks: int, channels: int = CHANNELS, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    stack = nn.Sequential(*[RepVGGStyleBlock(channels) for _ in range(n_blocks)])
    return randomize_batch_norms(stack, seed).eval()


def demo_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batch_norms(DemoNet(), seed).eval()


def plain_stack_like(deployed: nn.Module) -> nn.Module:
    """A hand-written Conv2d(bias=True) + ReLU stack holding the deployed convs' weights."""
    convs = [m for m in deployed.modules() if isinstance(m, nn.Conv2d)]
    layers: list[nn.Module] = []
    for c in convs:
        if c.bias is None:
            raise RuntimeError("a deployed RepVGG block should have a biased conv")
        plain = nn.Conv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
            bias=True,
            padding_mode=c.padding_mode,
        )
        with torch.no_grad():
            plain.weight.copy_(c.weight)
            plain.bias.copy_(c.bias)
        layers += [plain, nn.ReLU()]
    return nn.Sequential(*layers).eval()


# --------------------------------------------------------------------------- timing


def interleaved_medians(fns: Sequence[Callable[[], Any]], runs: int, warmup: int) -> list[float]:
    """Median seconds per call of each fn; calls are interleaved round by round."""
    with torch.inference_mode():
        return [t.median for t in time_interleaved(fns, runs=runs, warmup=warmup)]


def spread(values: Sequence[float]) -> float:
    """(max - min) / median of repeated timings: how noisy they were."""
    if len(values) < 2:
        return 0.0
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


# --------------------------------------------------------------------------- sections


def bench_conversion(
    sizes: Sequence[int], repeats: int, keep: dict[int, tuple[nn.Module, nn.Module]]
) -> dict[str, Any]:
    """Time deploys; ``keep`` receives (model, deployed) per depth for the later sections."""
    x = torch.randn(1, CHANNELS, SPATIAL, SPATIAL)
    # First deploy in a process pays one-time costs (imports, fake-tensor setup): not timed.
    reparam.deploy(repvgg_stack(2), x, check=False)
    rows = []
    for n in sizes:
        model = repvgg_stack(n)
        made: list[nn.Module] = []

        def deploy(model: nn.Module = model, made: list[nn.Module] = made) -> None:
            made.append(reparam.deploy(model, x, check=False))

        (timing,) = time_interleaved([deploy], runs=repeats, warmup=0)
        samples, deployed = list(timing.samples), made[-1]
        keep[n] = (model, deployed)
        convs = sum(isinstance(m, nn.Conv2d) for m in deployed.modules())
        norms = sum(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
        with torch.inference_mode():
            err = reparam.relative_error(model(x), deployed(x))
        secs = statistics.median(samples)
        rows.append(
            {
                "blocks": n,
                "seconds": secs,
                "seconds_per_block": secs / n,
                "samples": samples,
                "convs_after": convs,
                "batch_norms_after": norms,
                "relative_error": err,
            }
        )
    first, last = rows[0], rows[-1]
    growth = (last["seconds"] / first["seconds"]) * (first["blocks"] / last["blocks"])
    return {
        "input": [1, CHANNELS, SPATIAL, SPATIAL],
        "repeats": repeats,
        "rows": rows,
        "growth_ratio": growth,
        "growth_between": [first["blocks"], last["blocks"]],
    }


def stack_pair(keep: dict[int, tuple[nn.Module, nn.Module]]) -> tuple[nn.Module, nn.Module]:
    """The latency stack and its deployed form (reused from the conversion timing if there)."""
    if STACK_FOR_LATENCY not in keep:
        model = repvgg_stack(STACK_FOR_LATENCY)
        x = torch.randn(1, CHANNELS, SPATIAL, SPATIAL)
        keep[STACK_FOR_LATENCY] = (model, reparam.deploy(model, x, check=False))
    return keep[STACK_FOR_LATENCY]


def bench_latency(
    batches: Sequence[int], runs: int, warmup: int, stack: tuple[nn.Module, nn.Module]
) -> list[dict[str, Any]]:
    demo = demo_net()
    cases = [
        (
            "demo net",
            demo,
            reparam.deploy(demo, torch.randn(1, 3, SPATIAL, SPATIAL), check=False),
            (3, SPATIAL, SPATIAL),
        ),
        (f"{STACK_FOR_LATENCY}-block stack", *stack, (CHANNELS, SPATIAL, SPATIAL)),
    ]
    rows = []
    for name, model, deployed, shape in cases:
        for b in batches:
            x = torch.randn(b, *shape)
            before, after = interleaved_medians(
                [lambda m=model, x=x: m(x), lambda m=deployed, x=x: m(x)], runs, warmup
            )
            rows.append(
                {
                    "model": name,
                    "batch": b,
                    "before_ms": before * 1e3,
                    "after_ms": after * 1e3,
                    "speedup": before / after,
                }
            )
    return rows


def bench_plain(
    batches: Sequence[int], runs: int, warmup: int, trials: int, deployed: nn.Module
) -> list[dict]:
    shape = (CHANNELS, SPATIAL, SPATIAL)
    plain = plain_stack_like(deployed)
    rows = []
    for b in batches:
        x = torch.randn(b, *shape)
        with torch.inference_mode():
            ref, out = deployed(x), plain(x)
        err = reparam.relative_error(ref, out)
        if not err <= 1e-6:
            raise RuntimeError(f"hand-built plain stack differs from the deployed one: {err:.2e}")
        ratios, dep_ms, plain_ms = [], [], []
        for _ in range(trials):
            d, p = interleaved_medians(
                [lambda m=deployed, x=x: m(x), lambda m=plain, x=x: m(x)], runs, warmup
            )
            ratios.append(d / p)
            dep_ms.append(d * 1e3)
            plain_ms.append(p * 1e3)
        rows.append(
            {
                "batch": b,
                "deployed_ms": statistics.median(dep_ms),
                "plain_ms": statistics.median(plain_ms),
                "ratio": statistics.median(ratios),
                "ratio_trials": ratios,
                "ratio_spread": spread(ratios),
                "relative_error": err,
            }
        )
    return rows


# --------------------------------------------------------------------------- output


def render(result: dict[str, Any]) -> str:
    out = []
    m = result["machine"]
    load = m["load_average_1_5_15"]
    load_txt = "n/a" if load is None else " / ".join(f"{v:.2f}" for v in load)
    out.append(f"machine : {m['cpu']} ({m['logical_cpus']} logical CPUs, load {load_txt})")
    out.append(
        f"software: torch {m['torch']}, reparam {m['reparam']}, python {m['python']}, "
        f"torch threads {m['torch_threads']}"
    )
    out.append(f"mode    : {result['mode']}, total {result['total_seconds']:.1f} s")
    out.append("")

    conv = result["conversion"]
    out.append(
        f"1. conversion time of reparam.deploy(check=False), RepVGG-style stacks, input "
        f"{'x'.join(map(str, conv['input']))}, median of {conv['repeats']}"
    )
    out.append(
        f"   {'blocks':>6} {'seconds':>9} {'s/block':>9} {'convs':>6} {'BNs':>4} {'rel.err':>9}"
    )
    for r in conv["rows"]:
        out.append(
            f"   {r['blocks']:>6} {r['seconds']:>9.3f} {r['seconds_per_block']:>9.4f} "
            f"{r['convs_after']:>6} {r['batch_norms_after']:>4} {r['relative_error']:>9.1e}"
        )
    lo, hi = conv["growth_between"]
    out.append(
        f"   growth ratio (t{hi}/t{lo}) x ({lo}/{hi}) = {conv['growth_ratio']:.2f}"
        "   (1.00 = linear in the number of blocks)"
    )
    out.append("")

    lat = result["latency"]
    out.append(
        f"2. latency, median of {result['runs']} runs after {result['warmup']} warm-up, "
        "inference_mode, before vs after deploy (interleaved)"
    )
    out.append(f"   {'model':<16} {'batch':>5} {'before ms':>10} {'after ms':>10} {'speedup':>8}")
    for r in lat:
        out.append(
            f"   {r['model']:<16} {r['batch']:>5} {r['before_ms']:>10.3f} "
            f"{r['after_ms']:>10.3f} {r['speedup']:>7.2f}x"
        )
    out.append("")

    plain = result["plain"]
    out.append(
        f"3. deployed {STACK_FOR_LATENCY}-block stack vs the same network hand-built as plain "
        f"Conv2d(bias=True)+ReLU (median of {result['plain_trials']} trials)"
    )
    out.append(
        f"   {'batch':>5} {'deployed ms':>12} {'plain ms':>10} {'ratio':>7} "
        f"{'spread':>7} {'rel.err':>9}"
    )
    for r in plain:
        out.append(
            f"   {r['batch']:>5} {r['deployed_ms']:>12.3f} {r['plain_ms']:>10.3f} "
            f"{r['ratio']:>7.3f} {r['ratio_spread']:>6.1%} {r['relative_error']:>9.1e}"
        )
    out.append(
        "   ratio = deployed / plain (1.00 = no overhead); "
        "spread = (max - min) / median over trials"
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 30 s")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--runs", type=int, help="timed runs per latency measurement")
    parser.add_argument("--warmup", type=int, help="warm-up runs per latency measurement")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="stack depths for the conversion timing"
    )
    parser.add_argument("--repeats", type=int, help="deploys per depth (median is reported)")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick:
        sizes, repeats, runs, warmup, trials = [8, 32, 128], 1, 10, 2, 1
    else:
        sizes, repeats, runs, warmup, trials = [8, 32, 128], 3, 100, 10, 5
    sizes = args.sizes or sizes
    repeats = args.repeats or repeats
    runs = args.runs or runs
    warmup = args.warmup if args.warmup is not None else warmup
    if len(sizes) < 2:
        parser.error("--sizes needs at least two depths")

    start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "mode": "quick" if args.quick else "full",
        "runs": runs,
        "warmup": warmup,
        "plain_trials": trials,
    }
    keep: dict[int, tuple[nn.Module, nn.Module]] = {}
    result["conversion"] = bench_conversion(sorted(sizes), repeats, keep)
    stack = stack_pair(keep)
    result["latency"] = bench_latency([1, 8], runs, warmup, stack)
    result["plain"] = bench_plain([1, 8], runs, warmup, trials, stack[1])
    result["total_seconds"] = time.perf_counter() - start
    result["machine"]["load_average_1_5_15"] = machine_info()["load_average_1_5_15"]

    print(render(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

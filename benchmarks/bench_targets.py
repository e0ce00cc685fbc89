"""The speed targets of issue 7, measured in one run, each with its target and PASS/FAIL.

One torch thread by default (``--threads``); every timing is a median of interleaved rounds
(``reparam.timing.time_interleaved``: each round calls every compared function once, the
order rotating), so load from other processes falls on the compared calls alike. Before
anything is timed, one conversion of each kind runs untimed (imports, one-time caches).

1. ``reparam.deploy(model, x, check=False)`` against timm's
   ``timm.utils.model.reparameterize_model(model)`` (both return a new model: timm's deep-copies,
   ours copies) on timm's repvgg_a0, mobileone_s0, fastvit_t8 and repvit_m0_9: random weights,
   trained-looking batch norms, eval mode, ``x = randn(1, 3, 224, 224)``. Target: ratio <= 1.0.
2. The default deploy ``reparam.deploy(model, x)`` (float64 equivalence check included) against
   timm's conversion, same models, same rounds as 1. Target: ratio <= 3.
3. RepMLPNet-B224 (``reparam_models.create_model("repmlpnet_b224")``, input 1x3x224x224): default
   deploy time / one forward pass's time (eval, ``torch.inference_mode``), medians of the same
   interleaved rounds. Target: <= 12.
4. Conversion time per block (``deploy(check=False)``) of 64 blocks against 8 when each
   ``reparam.demo.RepVGGStyleBlock`` (16 channels, input 1x16x32x32) sits 4 modules deep
   (``nn.Sequential`` of ``Wrapper(Wrapper(Wrapper(block)))``): ``(t64 / 64) / (t8 / 8)``.
   Target: <= 1.3. The flat stack (blocks straight in the ``nn.Sequential``) is printed too.
5. Peak memory of the default deploy on RepMLPNet-B224, in a fresh subprocess: the resident
   set's high-water mark during ``reparam.deploy(model, x)`` minus the resident set just before
   it (Linux: the mark is reset with ``/proc/self/clear_refs`` right before the deploy; where that
   is not possible the fresh process's own high-water mark is used, which can only overstate the
   growth), divided by the model's parameter and buffer bytes plus one activation set (the summed
   bytes of every distinct tensor that a module returns in one forward, found with forward hooks
   on all modules; a tensor returned by a module and by its wrapper counts once). RSS, not
   ``tracemalloc``: tensor storage is allocated outside Python's allocator, and torch keeps no
   allocator statistics for the CPU. The growth includes the deployed copy itself, the traces
   and the float64 check. Target: <= 2.5.
6. The deployed 32-block stack of ``benchmarks/bench_engine.py`` (``repvgg_stack`` +
   ``plain_stack_like``) at batch 1 against the same network hand-built as a plain
   ``Conv2d(bias=True) + ReLU`` stack (median over trials of the ratio of medians). Target:
   ratio <= 1.03.

``--quick`` (< 3 min on 2 busy cores; about 3.5 min at load 7): one round of each, timm's
repvgg_a0 only for 1-2, RepMLPNet-T designed for 64x64 (``img_size=64, hs=(16, 8, 4, 2)``)
instead of B224 for 3 and 5 (said in the table), fewer latency rounds for 6.

Usage::

    python benchmarks/bench_targets.py                  # every target, default rounds
    python benchmarks/bench_targets.py --quick          # < 3 min
    python benchmarks/bench_targets.py --only 1,3 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench_engine import plain_stack_like
from bench_engine import repvgg_stack as engine_stack
from bench_suite import machine, machine_line, repvgg_stack, timm_case
from torch import nn

import reparam
import reparam_models
from reparam.demo import RepVGGStyleBlock, randomize_batch_norms
from reparam.timing import Timing, time_interleaved

try:
    import timm
    from timm.utils.model import reparameterize_model as timm_reparameterize
except ImportError:
    timm = None
    timm_reparameterize = None

TIMM_MODELS = ("repvgg_a0", "mobileone_s0", "fastvit_t8", "repvit_m0_9")
QUICK_TIMM_MODELS = ("repvgg_a0",)
CHANNELS, SPATIAL = 16, 32
ITEMS = (1, 2, 3, 4, 5, 6)


@dataclass
class Row:
    """One measured line: ``measured`` is compared with ``target`` (lower is better)."""

    item: int
    what: str
    target: float
    measured: float
    detail: str
    noisy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.measured <= self.target


@dataclass
class Settings:
    quick: bool
    runs: int  # rounds of conversions
    latency_runs: int  # rounds of forwards (item 6)
    trials: int  # item 6: ratio trials
    stack_blocks: int  # item 6
    depths: tuple[int, int]  # item 4


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _s(v: float) -> str:
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _noisy(timings: Sequence[Timing]) -> bool:
    return any(len(t.samples) > 1 and t.noisy() for t in timings)


def _inference(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return fn()

    return call


# --------------------------------------------------------------------------- models


class Wrapper(nn.Module):
    """A module that only calls the one it holds (a nesting level, as in real model code)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def nested_stack(n_blocks: int, depth: int = 4) -> nn.Module:
    """``nn.Sequential`` of blocks each ``depth`` modules deep (``depth - 1`` wrappers)."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for _ in range(n_blocks):
        m: nn.Module = RepVGGStyleBlock(CHANNELS)
        for _ in range(depth - 1):
            m = Wrapper(m)
        blocks.append(m)
    return randomize_batch_norms(nn.Sequential(*blocks), 0).eval()


def repmlpnet(quick: bool) -> tuple[str, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if quick:
        name, size = "RepMLPNet-T @64 (quick)", 64
        model = reparam_models.create_model("repmlpnet_t224", img_size=64, hs=(16, 8, 4, 2))
    else:
        name, size = "RepMLPNet-B224", 224
        model = reparam_models.create_model("repmlpnet_b224")
    randomize_batch_norms(model, 0).eval()
    return name, model, torch.randn(1, 3, size, size)


def warm_up(only: set[int]) -> None:
    """One-time costs (imports, caches) of the converters used, paid before anything is timed."""
    x = torch.randn(1, CHANNELS, SPATIAL, SPATIAL)
    reparam.deploy(nested_stack(2), x)
    reparam.deploy(repvgg_stack(2), x, check=False)
    if timm is not None and only & {1, 2}:
        timm_reparameterize(timm.create_model("repvgg_a0", pretrained=False))


# --------------------------------------------------------------------------- items


def items_1_2(s: Settings, only: set[int]) -> list[Row]:
    if timm is None:
        log("  timm is not installed: items 1 and 2 skipped")
        return []
    rows = []
    for name in QUICK_TIMM_MODELS if s.quick else TIMM_MODELS:
        case = timm_case(name, 224)
        fns = {
            "check=False": lambda c=case: reparam.deploy(c.model, c.x, check=False),
            "default": lambda c=case: reparam.deploy(c.model, c.x),
            "timm": lambda c=case: timm_reparameterize(c.model),
        }
        if 2 not in only:
            del fns["default"]
        if 1 not in only:
            del fns["check=False"]
        log(f"  {name}: {len(fns)} converters, {s.runs} round(s) ...")
        t = dict(zip(fns, time_interleaved(list(fns.values()), runs=s.runs, warmup=0),
                     strict=True))
        base = t["timm"].median
        for item, key, target in ((1, "check=False", 1.0), (2, "default", 3.0)):
            if key in t:
                rows.append(Row(
                    item, f"{name}: deploy({key}) / timm reparameterize_model", target,
                    t[key].median / base, f"{_s(t[key].median)} vs {_s(base)}",
                    _noisy([t[key], t["timm"]]),
                    {"seconds": {k: list(v.samples) for k, v in t.items()}},
                ))
        del case, fns
        gc.collect()
    return rows


def item_3(s: Settings) -> list[Row]:
    name, model, x = repmlpnet(s.quick)
    log(f"  {name}: default deploy and forward, {s.runs} round(s) ...")
    _inference(lambda: model(x))()  # first forward in the process: not timed
    dep, fwd = time_interleaved(
        [lambda: reparam.deploy(model, x), _inference(lambda: model(x))], runs=s.runs, warmup=0
    )
    return [Row(
        3, f"{name}: default deploy / one forward", 12.0, dep.median / fwd.median,
        f"{_s(dep.median)} vs {_s(fwd.median)}", _noisy([dep, fwd]),
        {"deploy_s": list(dep.samples), "forward_s": list(fwd.samples)},
    )]


def item_4(s: Settings) -> list[Row]:
    lo, hi = s.depths
    x = torch.randn(1, CHANNELS, SPATIAL, SPATIAL)
    stacks = {
        ("nested", lo): nested_stack(lo), ("nested", hi): nested_stack(hi),
        ("flat", lo): repvgg_stack(lo), ("flat", hi): repvgg_stack(hi),
    }
    log(f"  {lo} and {hi} blocks, nested and flat, {s.runs} round(s) ...")
    timings = time_interleaved(
        [lambda m=m: reparam.deploy(m, x, check=False) for m in stacks.values()],
        runs=s.runs, warmup=0,
    )
    t = dict(zip(stacks, timings, strict=True))
    rows = []
    for kind, what in (("nested", "4 modules deep"), ("flat", "flat, for comparison")):
        a, b = t[(kind, lo)], t[(kind, hi)]
        rows.append(Row(
            4, f"per-block conversion time {hi} vs {lo} blocks, {what}", 1.3,
            (b.median / hi) / (a.median / lo),
            f"{a.median / lo * 1e3:.1f} → {b.median / hi * 1e3:.1f} ms/block",
            _noisy([a, b]), {"seconds": {str(lo): list(a.samples), str(hi): list(b.samples)}},
        ))
    return rows


def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Summed bytes of the distinct tensors the modules return in one forward."""
    seen: dict[tuple[int, int], int] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                seen[(t.data_ptr(), t.nbytes)] = t.nbytes

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values())


def memory_child(quick: bool, threads: int) -> dict[str, Any]:
    """Runs in a fresh process: the resident-set growth of one default deploy."""
    torch.set_num_threads(threads)
    name, model, x = repmlpnet(quick)
    reparam.deploy(repvgg_stack(2), torch.randn(1, CHANNELS, SPATIAL, SPATIAL))  # imports
    state = list(model.parameters()) + list(model.buffers())
    model_bytes = sum(t.nbytes for t in state)
    act = activation_bytes(model, x)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # reset the high-water mark to the current resident set
        method = "VmHWM reset by clear_refs"
    except OSError:
        method = "VmHWM of a fresh process (not reset)"
    before = _rss_kb("VmRSS") * 1024
    deployed = reparam.deploy(model, x)
    peak = _rss_kb("VmHWM") * 1024
    del deployed
    return {"model": name, "model_bytes": model_bytes, "activation_bytes": act,
            "rss_before": before, "peak": peak, "method": method}


def item_5(s: Settings, threads: int) -> list[Row]:
    if not Path("/proc/self/status").exists():
        log("  no /proc/self/status (not Linux): item 5 skipped")
        return []
    log("  peak memory of a default deploy, fresh subprocess ...")
    cmd = [sys.executable, __file__, "--memory-child", "--threads", str(threads)]
    if s.quick:
        cmd.append("--quick")
    # the child imports the same reparam as this process
    here = str(Path(reparam.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["rss_before"]
    budget = r["model_bytes"] + r["activation_bytes"]
    mib = 2**20
    return [Row(
        5, f"{r['model']}: peak RSS growth of a default deploy / (params + activations)", 2.5,
        growth / budget,
        f"{growth / mib:.0f} MiB / ({r['model_bytes'] / mib:.0f} + "
        f"{r['activation_bytes'] / mib:.0f} MiB); {r['method']}",
        False, r,
    )]


def item_6(s: Settings) -> list[Row]:
    n = s.stack_blocks
    x = torch.randn(1, CHANNELS, SPATIAL, SPATIAL)
    log(f"  {n}-block stack: deploy, then {s.trials} trial(s) of {s.latency_runs} rounds ...")
    model = engine_stack(n)
    deployed = reparam.deploy(model, x, check=False)
    plain = plain_stack_like(deployed)
    with torch.inference_mode():
        err = reparam.relative_error(deployed(x), plain(x))
    if not err <= 1e-6:
        raise RuntimeError(f"hand-built plain stack differs from the deployed one: {err:.2e}")
    ratios, dep_ms, plain_ms, noisy = [], [], [], False
    for _ in range(s.trials):
        d, p = time_interleaved(
            [_inference(lambda: deployed(x)), _inference(lambda: plain(x))],
            runs=s.latency_runs, warmup=max(2, s.latency_runs // 10),
        )
        ratios.append(d.median / p.median)
        dep_ms.append(d.median * 1e3)
        plain_ms.append(p.median * 1e3)
        noisy = noisy or _noisy([d, p])
    return [Row(
        6, f"deployed {n}-block stack / hand-built plain, batch 1", 1.03,
        statistics.median(ratios),
        f"{statistics.median(dep_ms):.3f} vs {statistics.median(plain_ms):.3f} ms", noisy,
        {"ratios": ratios, "deployed_ms": dep_ms, "plain_ms": plain_ms, "relative_error": err},
    )]


# --------------------------------------------------------------------------- output


def render(result: dict[str, Any]) -> str:
    out = [
        f"Machine: {machine_line(result['machine'])}",
        "",
        f"Command: `{result['command']}` ({result['mode']} run, {result['runs']} round(s) per "
        f"conversion timing, total {result['total_seconds']:.0f} s)",
        "",
        "| # | measurement | target | measured | ratio | result |",
        "|--:|---|--:|---|--:|---|",
    ]
    for r in result["rows"]:
        mark = "PASS" if r["measured"] <= r["target"] else "FAIL"
        noise = " (noisy)" if r["noisy"] else ""
        out.append(
            f"| {r['item']} | {r['what']} | ≤ {r['target']:g} | {r['detail']} "
            f"| {r['measured']:.2f} | {mark}{noise} |"
        )
    out += [
        "",
        "ratio = the measured quantity compared with the target (lower is better); "
        "noisy = interquartile range over 10% of a median.",
    ]
    return "\n".join(out)


def parse_only(text: str | None) -> set[int]:
    if not text:
        return set(ITEMS)
    chosen = {int(v) for v in text.replace(" ", "").split(",") if v}
    if not chosen <= set(ITEMS):
        raise argparse.ArgumentTypeError(f"--only takes items among {ITEMS}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", type=parse_only, default=set(ITEMS),
                        help="comma-separated items to run, e.g. 1,3 (default: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable timings)")
    parser.add_argument("--runs", type=int, help="rounds per conversion timing")
    parser.add_argument("--latency-runs", type=int, help="rounds per latency trial (item 6)")
    parser.add_argument("--stack-blocks", type=int, default=32, help="item 6's stack depth")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.quick, args.threads)))
        return 0
    if args.quick:
        s = Settings(True, 1, 30, 3, args.stack_blocks, (8, 64))
    else:
        s = Settings(False, 3, 200, 5, args.stack_blocks, (8, 64))
    s.runs = args.runs or s.runs
    s.latency_runs = args.latency_runs or s.latency_runs

    start = time.perf_counter()
    log("warming up the converters ...")
    warm_up(args.only)
    rows: list[Row] = []
    if args.only & {1, 2}:
        log("1-2. deploy vs timm's reparameterize_model")
        rows += items_1_2(s, args.only)
    steps: list[tuple[int, Callable[[], list[Row]]]] = [
        (3, lambda: item_3(s)),
        (4, lambda: item_4(s)),
        (5, lambda: item_5(s, args.threads)),
        (6, lambda: item_6(s)),
    ]
    for item, run in steps:
        if item in args.only:
            log(f"{item}.")
            rows += run()
            gc.collect()
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_targets.py", *argv]),
        "mode": "quick" if s.quick else "default",
        "runs": s.runs,
        "settings": asdict(s),
        "rows": [{**asdict(r), "passed": r.passed} for r in rows],
        "total_seconds": time.perf_counter() - start,
        "machine": machine(),  # taken at the end: the load average covers the run
    }
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0 if all(math.isfinite(r.measured) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

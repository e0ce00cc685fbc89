"""Benchmark: a deployed RepMLP that is actually fast (CPU).

For RepMLPNet-B224 and a RepMLP-Res50 it compares three forms of the same network:

* ``train``: the training-time model (eval mode: BNs, Local Perceptron convs, fc3 without bias);
* ``deployed``: ``reparam.deploy(train)`` with every built-in rule, including
  ``grouped_fc_as_bmm`` (each RepMLP FC, a grouped 1×1 conv on 1×1 maps, computed by
  ``torch.baddbmm`` where the engine measured that to be faster);
* ``reference-style``: the same deployed weights with each FC left as the plain grouped 1×1
  ``nn.Conv2d``, i.e. what the reference implementation's deploy runs (without our rule).

It reports parameters and the median latency of interleaved runs (train, deployed,
reference-style, train, ... with the order rotated every round, so load from other processes
falls on all forms alike) at batch 1 and, in the full run, batch 32, under
``torch.inference_mode`` with a stated thread count, and the ratios. The deploy decisions are
taken at the example input of the model's ``pretrained_cfg`` (batch 1).

Usage::

    python benchmarks/bench_repmlp.py --quick          # batch 1 only, few rounds
    python benchmarks/bench_repmlp.py                  # batch 1 and 32
    python benchmarks/bench_repmlp.py --models repmlpnet_b224 --batches 1 8 --threads 4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch
from _machine import cpu_model
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms
from reparam.runtime import GroupedPointwiseConv
from reparam.timing import time_interleaved
from reparam_models import create_model

DEFAULT_MODELS = ("repmlpnet_b224", "repmlp_res50_light_224")
FORMS = ("train", "deployed", "reference-style")


def reference_style(deployed: nn.Module) -> nn.Module:
    """The deployed model with every batched-matmul FC turned back into the plain grouped 1×1
    conv it was (same parameters): the reference implementation's deployed structure."""
    model = copy.deepcopy(deployed)
    for path, module in list(model.named_modules()):
        if type(module) is GroupedPointwiseConv:
            conv = nn.Conv2d(module.in_channels, module.out_channels, 1, groups=module.groups,
                             bias=module.bias is not None, device="meta")
            conv.weight = module.weight
            conv.bias = module.bias
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, name, conv.eval())
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latencies(
    models: dict[str, nn.Module], x: torch.Tensor, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per forward of each model, interleaved round by round (order rotated)."""
    names = list(models)
    with torch.inference_mode():
        timings = time_interleaved(
            [lambda n=n: models[n](x) for n in names], runs=rounds, warmup=warmup
        )
    return {n: list(t.samples) for n, t in zip(names, timings, strict=True)}


def bench_model(name: str, batches: list[int], rounds: dict[int, int], warmup: int,
                log: Any) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    train = randomize_batch_norms(create_model(name)).eval()
    start = time.perf_counter()
    result = reparam.deploy_with_report(train)  # example input from pretrained_cfg (batch 1)
    deploy_s = time.perf_counter() - start
    deployed = result.model
    ref = reference_style(deployed)
    fired = result.report.fired()
    bmm_sites = fired.get("grouped_fc_as_bmm", 0)
    kept = [o for o in result.report.refusals if o.rule == "grouped_fc_as_bmm"]
    log(f"\n{name}: deploy {deploy_s:.1f} s, rules fired {fired}")
    log(f"  FCs as batched matmul: {bmm_sites}; kept as grouped conv: {len(kept)}")
    for o in kept[:4]:
        log(f"    kept {o.site}: {o.reason}")
    for w in [w for w in result.report.rewrites if w.rule == "grouped_fc_as_bmm"][:4]:
        log(f"    {w.site}: {w.detail}")
    forms = {"train": train, "deployed": deployed, "reference-style": ref}
    params = {f: n_params(m) for f, m in forms.items()}
    size = int(train.pretrained_cfg["input_size"][-1])
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        with torch.inference_mode():
            y = train(x)
            errs = {f: reparam.relative_error(y, m(x)) for f, m in forms.items() if f != "train"}
        times = latencies(forms, x, rounds[batch], warmup)
        med = {f: statistics.median(t) for f, t in times.items()}
        row = {
            "model": name,
            "batch": batch,
            "rounds": rounds[batch],
            "params": params,
            "median_ms": {f: med[f] * 1e3 for f in FORMS},
            "deployed_vs_train": med["deployed"] / med["train"],
            "deployed_vs_reference_style": med["deployed"] / med["reference-style"],
            "reference_style_vs_train": med["reference-style"] / med["train"],
            "relative_error_vs_train": errs,
            "bmm_sites": bmm_sites,
            "deploy_seconds": deploy_s,
        }
        rows.append(row)
        log(f"  batch {batch} ({rounds[batch]} interleaved rounds, median):")
        for f in FORMS:
            log(f"    {f:<16} {params[f] / 1e6:8.2f} M params  {med[f] * 1e3:9.1f} ms")
        log(f"    deployed / reference-style = {row['deployed_vs_reference_style']:.2f}   "
            f"deployed / train = {row['deployed_vs_train']:.2f}   "
            f"reference-style / train = {row['reference_style_vs_train']:.2f}")
        log("    relative error vs train (fp32): "
            + ", ".join(f"{f} {e:.1e}" for f, e in errs.items()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="batch 1 only, fewer rounds")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help=f"zoo names (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batch sizes (default: 1 with --quick, else 1 32)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per batch (default: 5 quick / 9 at batch 1, "
                             "3 at larger batches)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's current setting)")
    parser.add_argument("--json", type=str, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([1] if args.quick else [1, 32])
    rounds = {b: args.rounds or (5 if args.quick else (9 if b == 1 else 3)) for b in batches}
    warmup = 1

    def log(line: str) -> None:
        print(line, flush=True)

    log("bench_repmlp: train vs deployed (reparam, with grouped_fc_as_bmm) vs reference-style "
        "deployed (same weights, FC as grouped 1x1 conv)")
    log(f"torch {torch.__version__}, CPU: {cpu_model()}, intra-op threads: "
        f"{torch.get_num_threads()}, device: cpu, dtype: float32, inference_mode, "
        f"{'quick' if args.quick else 'full'} run")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows.extend(bench_model(name, batches, rounds, warmup, log))
    log(f"\ntotal {time.perf_counter() - start:.0f} s")
    log("\nsummary (median latency, ms):")
    log(f"{'model':<26}{'batch':>6}{'train':>10}{'deployed':>10}{'ref-style':>11}"
        f"{'dep/ref':>9}{'dep/train':>11}")
    for r in rows:
        ms = r["median_ms"]
        log(f"{r['model']:<26}{r['batch']:>6}{ms['train']:>10.1f}{ms['deployed']:>10.1f}"
            f"{ms['reference-style']:>11.1f}{r['deployed_vs_reference_style']:>9.2f}"
            f"{r['deployed_vs_train']:>11.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__,
                       "cpu": cpu_model(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

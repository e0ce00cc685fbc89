"""The RepMLP papers' claims at small scale: Locality Injection, measured.

RepMLPNet (arXiv:2112.11081) and RepMLP (arXiv:2105.01883) claim that training an MLP block
with parallel local conv branches (the Local Perceptron) and merging them into its FC afterwards
("Locality Injection") gives a better model at the same inference cost, and that the merge
changes no prediction. This script trains the same nano RepMLPNet (``repmlpnet_n16``) on the
built-in digits data three times per seed with ``reparam_models.train`` (same recipe; for a
given seed the same data order and augmentation draws):

* ``reparam_conv_k=(1, 3)``: the paper's Local Perceptron (a 3x3 local branch and a 1x1 one);
* ``reparam_conv_k=(1,)``: no locality -- the 1x1 branch is pointwise, it only adds a learned
  multiple of the identity to fc3, so this is the pure MLP; its deployed form is *identical* to
  the first one's;
* ``reparam_conv_k=()``: no branches at all;

deploys each with ``reparam.deploy`` and reports:

* test top-1 (360 images) of each variant: mean, sample standard deviation, min..max;
* the per-seed paired difference (with minus without);
* prediction agreement between each trained model and its deployed form (must be 1.0);
* whether the deployed models have the same parameter names and shapes as the local one's
  (identical inference architecture: the local branch costs nothing at inference).

Writes a JSON and a PNG plot (default: ``docs/assets/claims/``). Usage::

    python benchmarks/bench_locality_claims.py                  # 5 seeds x 3 variants
    python benchmarks/bench_locality_claims.py --quick          # 2 seeds, 2 epochs
    python benchmarks/bench_locality_claims.py --seeds 0 1 2 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _machine import cpu_model

from reparam_models.train import train

MODEL = "repmlpnet_n16"
# The 1x1 branch is pointwise (a per-share-set scale on the partition: no spatial neighbourhood),
# so "1x1 only" is the pure-MLP baseline whose deployed form is identical to the local one's.
# "none" drops the branches altogether; its fc3_bn stays a BatchNorm after deploy (see the docs).
VARIANTS = {"local (1x1+3x3)": [1, 3], "no locality (1x1)": [1], "no branches": []}


def _run(seed: int, kernels: list[int], epochs: int, out: Path) -> dict[str, Any]:
    return train([
        "--model", MODEL, "--model-kwargs", json.dumps({"reparam_conv_k": kernels}),
        "--epochs", str(epochs), "--seed", str(seed), "--output", str(out),
        "--eval-every", str(epochs), "--progress", "off",
    ])


def _same_architecture(a: Path, b: Path) -> bool:
    sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
    return {k: tuple(v.shape) for k, v in sa.items()} == {k: tuple(v.shape) for k, v in sb.items()}


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs)}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    names = list(VARIANTS)
    for i, name in enumerate(names):
        accs = [100 * r["top1"] for r in result["runs"] if r["variant"] == name]
        ax.scatter([i] * len(accs), accs, color=f"C{i}", alpha=0.6, zorder=3)
        s = result["summary"][name]["top1"]
        ax.errorbar(i + 0.15, 100 * s["mean"], yerr=100 * s["std"], fmt="D", color="black",
                    capsize=5, zorder=4)
    for seed in result["seeds"]:
        ys = [100 * r["top1"] for n in names for r in result["runs"]
              if r["variant"] == n and r["seed"] == seed]
        ax.plot(range(len(ys)), ys, color="grey", lw=0.6, alpha=0.5, zorder=2)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel("test top-1 (%), 360 digits")
    ax.set_title(f"{MODEL}, {result['epochs']} epochs, {len(result['seeds'])} seeds "
                 "(diamond: mean ± std)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs")
    p.add_argument("--out", type=Path, default=Path("docs/assets/claims"),
                   help="folder for locality.json and locality.png")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:2], 2
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}, Python "
          f"{platform.python_version()}", flush=True)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    same_arch: dict[str, list[bool]] = {}
    names = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            dirs = {}
            for name, kernels in VARIANTS.items():
                dirs[name] = Path(tmp) / f"{seed}-{len(kernels)}"
                r = _run(seed, kernels, args.epochs, dirs[name])
                runs.append({"variant": name, "seed": seed, "reparam_conv_k": kernels,
                             **{k: r[k] for k in ("top1", "top1_deployed",
                                                  "prediction_agreement", "max_abs_logit_diff",
                                                  "params", "params_deployed", "seconds")}})
                print(f"seed {seed}  {name:<20} top-1 {r['top1']:.4f}  deployed "
                      f"{r['top1_deployed']:.4f}  agreement {r['prediction_agreement']:.4f}  "
                      f"params {r['params']:,} -> {r['params_deployed']:,}  "
                      f"({r['seconds']:.0f} s)", flush=True)
            ref = dirs[names[0]] / "deployed.pt"
            for n in names[1:]:
                same_arch.setdefault(n, []).append(_same_architecture(ref, dirs[n] / "deployed.pt"))
    summary = {
        n: {"top1": _stats([r["top1"] for r in runs if r["variant"] == n]),
            "prediction_agreement_min": min(r["prediction_agreement"] for r in runs
                                            if r["variant"] == n),
            "params": runs[names.index(n)]["params"],
            "params_deployed": runs[names.index(n)]["params_deployed"]}
        for n in names
    }
    by_seed = {(r["variant"], r["seed"]): r["top1"] for r in runs}
    paired = {n: [by_seed[(names[0], s)] - by_seed[(n, s)] for s in args.seeds]
              for n in names[1:]}
    result = {
        "model": MODEL, "data": "scikit-learn digits (1437 train / 360 test)",
        "epochs": args.epochs, "seeds": args.seeds, "runs": runs, "summary": summary,
        "paired_difference_vs_local": {
            n: {**_stats(d), "seeds_local_better": sum(x > 0 for x in d),
                "seeds_tied": sum(x == 0 for x in d)} for n, d in paired.items()},
        "deployed_architecture_identical_to_local": {n: all(v) for n, v in same_arch.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }
    print()
    for n in names:
        s = summary[n]["top1"]
        print(f"{n:<20} top-1 {100 * s['mean']:.2f} ± {100 * s['std']:.2f} % "
              f"(min {100 * s['min']:.2f}, max {100 * s['max']:.2f}), params "
              f"{summary[n]['params']:,} train -> {summary[n]['params_deployed']:,} deployed, "
              f"min prediction agreement {summary[n]['prediction_agreement_min']:.4f}")
    for n, d in result["paired_difference_vs_local"].items():
        print(f"local minus {n!r}, paired by seed: {100 * d['mean']:+.2f} ± {100 * d['std']:.2f} "
              f"points; local better on {d['seeds_local_better']} of {len(args.seeds)} seeds "
              f"({d['seeds_tied']} tied); deployed architecture identical to local's: "
              f"{result['deployed_architecture_identical_to_local'][n]}")
    print(f"total {result['seconds']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "locality.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, args.out / "locality.png")
    print(f"wrote {args.out / 'locality.json'} and {args.out / 'locality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

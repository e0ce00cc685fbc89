"""Where one ``reparam.deploy`` spends its time: phase timers and time per scope kind.

Wraps the deploy's internal steps (``reparam.deploy``'s ``copy_model``, ``record_uses``,
``capture``, the scope's fixpoint and check, ``install_forward``) with wall-clock timers,
deploys a timm model once untimed (imports, one-time caches), then ``--repeats`` times timed,
and prints the median of each phase and, per module class, how many scopes it made and their
median total time. Phases nest (a scope's run holds its capture, fixpoint and check), so they
do not add up to the total. These are private functions: the script is a developer's tool and
follows them when they move.

Usage::

    python benchmarks/deploy_phases.py                       # mobileone_s0, check=False
    python benchmarks/deploy_phases.py repvit_m0_9 --check   # with the float64 check
    python benchmarks/deploy_phases.py repmlpnet_b224 --check  # a reparam_models model
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import torch

import reparam
from reparam.graph import capture as capture_module

DEPLOY = sys.modules["reparam.deploy"]

# (owner, attribute, label): the steps timed
_STEPS: list[tuple[object, str, str]] = [
    (DEPLOY, "copy_model", "copy the model"),
    (DEPLOY, "record_uses", "recorded forward (uses, call patterns)"),
    (DEPLOY, "capture", "trace (all scopes)"),
    (capture_module.ConcreteTracer, "_shadow", "  of which: shadow values"),
    (DEPLOY._Scope, "_fixpoint", "match, check and rewrite (fixpoint)"),
    (DEPLOY, "install_forward", "install the rewritten forwards"),
    (DEPLOY._Scope, "_check", "float64 check of rewritten scopes"),
    (DEPLOY._Scope, "run", "all scopes"),
]


def _timed(fn: Callable, label: str, totals: dict[str, float]) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", nargs="?", default="mobileone_s0", help="a timm or reparam_models model name"
    )
    parser.add_argument("--check", action="store_true", help="the default deploy (float64 check)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    args = parser.parse_args(argv)

    import timm

    import reparam_models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if reparam_models.is_model(args.model):
        model = reparam_models.create_model(args.model).eval()
    else:
        model = timm.create_model(args.model, pretrained=False).eval()
    x = torch.randn(1, 3, args.size, args.size)

    totals: dict[str, float] = defaultdict(float)
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _STEPS]
    for owner, name, label in _STEPS:
        setattr(owner, name, _timed(getattr(owner, name), label, totals))
    run = DEPLOY._Scope.run

    def run_by_kind(scope):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        try:
            return run(scope)
        finally:
            entry = by_kind[type(scope.module).__name__]
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    DEPLOY._Scope.run = run_by_kind
    samples: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, list[tuple[int, float]]] = defaultdict(list)
    try:
        reparam.deploy(model, x, check=args.check)  # untimed
        for _ in range(args.repeats):
            totals.clear()
            by_kind.clear()
            start = time.perf_counter()
            reparam.deploy(model, x, check=args.check)
            samples["deploy (total)"].append(time.perf_counter() - start)
            for _, _, label in _STEPS:
                samples[label].append(totals.get(label, 0.0))
            for kind, (count, seconds) in by_kind.items():
                kinds[kind].append((count, seconds))
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)

    print(
        f"{args.model}: reparam.deploy(model, x, check={args.check}), "
        f"x 1x3x{args.size}x{args.size}, "
        f"{args.threads} torch thread(s), median of {args.repeats}; torch {torch.__version__}, "
        f"reparam {reparam.__version__}"
    )
    print()
    print("| phase | seconds |")
    print("|---|--:|")
    for label, values in samples.items():
        print(f"| {label} | {statistics.median(values):.3f} |")
    print()
    print("| scope kind | scopes | seconds | ms / scope |")
    print("|---|--:|--:|--:|")
    rows = [
        (kind, runs[0][0], statistics.median(seconds for _, seconds in runs))
        for kind, runs in kinds.items()
    ]
    for kind, count, seconds in sorted(rows, key=lambda r: -r[2]):
        print(f"| {kind} | {count} | {seconds:.3f} | {1e3 * seconds / count:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

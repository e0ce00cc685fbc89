"""Run the slow hypothesis properties to their 10,000 examples, in pieces, in parallel.

Each slow property (``pytest -m slow``, ``*_slow`` tests under ``tests/properties``) is split
into ``--pieces`` runs of ``10,000 / pieces`` examples, each with its own
``--hypothesis-seed``, and the runs are spread over ``--jobs`` processes. Hypothesis prints how
many examples each run passed (``--hypothesis-show-statistics``); this script adds them up per
property and prints one table: examples passed, pieces failed, and the first failure's
reproduction blob. A run cut short by ``--timeout`` counts the examples it had passed when it
was stopped (the test harness notes them in a file every 10 examples).

Usage::

    python benchmarks/slow_properties.py                      # every slow property, CPU
    python benchmarks/slow_properties.py -k "block_stacks"    # a subset (pytest -k)
    python benchmarks/slow_properties.py --device cuda --jobs 8 --pieces 4
    python benchmarks/slow_properties.py --log-dir logs/      # keep each run's output
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 10_000


def slow_properties(device: str, select: str | None) -> list[str]:
    """Node ids of the slow property tests for ``device``."""
    cmd = [sys.executable, "-m", "pytest", "-m", "slow", "--collect-only", "-q", "-n", "0",
           "tests/properties", "-k", f"_slow and {device}" + (f" and ({select})" if select else "")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in out.splitlines() if "::" in line]


def run_piece(node: str, seed: int, examples: int, timeout: float, log_dir: Path | None) -> dict:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
    count_file = Path(tempfile.gettempdir()) / f"reparam-count-{os.getpid()}-{safe}-{seed}"
    count_file.unlink(missing_ok=True)
    env = dict(os.environ, HYPOTHESIS_PROFILE="slow", REPARAM_SLOW_EXAMPLES=str(examples),
               REPARAM_EXAMPLE_COUNT_FILE=str(count_file), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pytest", "-m", "slow", "-q", "-p", "no:cacheprovider",
           "-n", "0", node, f"--hypothesis-seed={seed}", "--hypothesis-show-statistics"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        raw = (exc.stdout or b"") + (exc.stderr or b"")
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        code = "timeout"
    if log_dir is not None:
        (log_dir / f"{safe}.seed{seed}.log").write_text(text)
    passing = sum(int(n) for n in re.findall(r"(\d+) passing examples", text))
    if code == "timeout" and count_file.exists():  # stopped early: what it had passed
        passing = int(count_file.read_text() or 0)
    count_file.unlink(missing_ok=True)
    blob = re.search(r"@reproduce_failure\([^)]*\)", text)
    return {"node": node, "seed": seed, "code": code, "passing": passing,
            "seconds": time.monotonic() - start, "blob": blob.group(0) if blob else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="select", help="pytest -k expression to pick properties")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--pieces", type=int, default=4, help="runs per property")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per piece")
    parser.add_argument("--seed", type=int, default=0, help="first seed (pieces count up)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run: pieces are stopped at the end of it "
                             "(their passed examples still count) and unstarted ones skipped")
    parser.add_argument("--examples", type=int, default=TOTAL,
                        help="examples per property in all (10,000: the contract)")
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args(argv)
    nodes = slow_properties(args.device, args.select)
    if not nodes:
        print("no slow properties selected")
        return 1
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    per_piece = -(-args.examples // args.pieces)
    jobs = [(n, args.seed + i) for i in range(args.pieces) for n in nodes]  # each property early
    print(f"{len(nodes)} properties x {args.pieces} pieces of {per_piece} examples, "
          f"{args.jobs} processes", flush=True)
    results = defaultdict(list)
    end = time.monotonic() + args.budget if args.budget else None

    def piece(node: str, seed: int) -> dict:
        timeout = args.timeout
        if end is not None:
            timeout = min(timeout, end - time.monotonic())
            if timeout < 30:  # not worth starting: count it as not run
                return {"node": node, "seed": seed, "code": "not run", "passing": 0,
                        "seconds": 0.0, "blob": None}
        return run_piece(node, seed, per_piece, timeout, args.log_dir)

    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(piece, n, s) for n, s in jobs]
        for f in futures:
            r = f.result()
            results[r["node"]].append(r)
            print(f"  {r['node']} seed {r['seed']}: exit {r['code']}, {r['passing']} passing, "
                  f"{r['seconds']:.0f} s", flush=True)
    print("\n| property | examples passed | pieces failed | pieces stopped by the time limit "
          "| first failure |")
    print("|---|---:|---:|---:|---|")
    failed_any = False
    for node in nodes:
        rs = results[node]
        failed = [r for r in rs if r["code"] not in (0, "timeout", "not run")]
        stopped = [r for r in rs if r["code"] in ("timeout", "not run")]
        failed_any |= bool(failed)
        blob = next((r["blob"] for r in failed if r["blob"]), "")
        print(f"| {node} | {sum(r['passing'] for r in rs):,} | {len(failed)} | {len(stopped)} "
              f"| {blob} |")
    return 1 if failed_any else 0


if __name__ == "__main__":
    sys.exit(main())

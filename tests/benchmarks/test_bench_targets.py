"""Smoke test of ``benchmarks/bench_targets.py``: tiny sizes, item 6 only, and its helpers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench_targets = pytest.importorskip("bench_targets")
from reparam.demo import RepVGGStyleBlock  # noqa: E402


def test_item_6_tiny(tmp_path: Path) -> None:
    out = tmp_path / "targets.json"
    argv = ["--quick", "--only", "6", "--stack-blocks", "2", "--latency-runs", "3"]
    assert bench_targets.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    (row,) = result["rows"]
    assert row["item"] == 6 and row["target"] == 1.03
    assert math.isfinite(row["measured"]) and row["measured"] > 0
    assert row["passed"] == (row["measured"] <= 1.03)
    assert row["extra"]["relative_error"] <= 1e-6
    assert len(row["extra"]["ratios"]) == result["settings"]["trials"]
    assert result["machine"]["torch_threads"] == 1


def test_nested_stack_puts_each_block_four_modules_deep() -> None:
    stack = bench_targets.nested_stack(3)
    blocks = [n for n, m in stack.named_modules() if isinstance(m, RepVGGStyleBlock)]
    assert blocks == [f"{i}.inner.inner.inner" for i in range(3)]
    assert not stack.training


def test_activation_bytes_counts_a_wrapped_output_once() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1)
    model = nn.Sequential(bench_targets.Wrapper(conv), nn.ReLU()).eval()
    x = torch.randn(2, 3, 7, 7)
    # conv's output (returned by conv and by its wrapper) + ReLU's output
    assert bench_targets.activation_bytes(model, x) == 2 * (2 * 5 * 7 * 7 * 4)


def test_only_rejects_unknown_items() -> None:
    with pytest.raises(SystemExit):
        bench_targets.main(["--only", "7"])

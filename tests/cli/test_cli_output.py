"""What the command line prints: compact and full reports, COLUMNS, per-layer weight ranges,
the spinner's scope count, bench's noise flag, and the generated CLI reference."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from reparam.cli import EXIT_OK, main, steps
from reparam.demo import RepVGGStyleBlock, randomize_batch_norms
from reparam.timing import Timing

FACTORIES = "reparam_cli_output_factories"
LONG = "a_module_with_a_rather_long_name_for_the_site_column"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Shared(nn.Module):
    """conv → norm with the conv's output used again: the norm stays, with a reason."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


class Mixed(nn.Module):
    pretrained_cfg = {"input_size": (4, 6, 6)}

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():  # the same weights every time it is built
            torch.manual_seed(0)
            self.block = RepVGGStyleBlock(4)
            self.shared = Shared()
            self.add_module(LONG, nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
            randomize_batch_norms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, LONG)(self.shared(self.block(x)))


@pytest.fixture
def factories(monkeypatch):
    module = types.ModuleType(FACTORIES)
    module.mixed = Mixed
    monkeypatch.setitem(sys.modules, FACTORIES, module)
    return f"{FACTORIES}:mixed"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compact_report_by_default_full_on_request(capsys, factories):
    code, compact, err = _run(capsys, "deploy", factories)
    assert code == EXIT_OK, err
    assert "rules fired and refused, per rule" in compact
    assert "norms left unfolded: 1" in compact and "shared.norm" in compact
    assert "block.dense.1" not in compact and "not merged (and why)" not in compact
    code, full, err = _run(capsys, "deploy", factories, "--full")
    assert code == EXIT_OK, err
    for site in ("block.dense.1", "block:add_1", "shared.norm", f"{LONG}.1"):
        assert site in full
    assert "not merged (and why)" in full
    # network order: the block's merges, then the long-named layer (the model's last)
    fired = full[full.index("rules fired") : full.index("not merged (and why)")]
    assert fired.index("block.dense.1") < fired.index("block:add_1") < fired.index(f"{LONG}.1")


@pytest.mark.parametrize("columns", [64, 80, 160])
def test_columns_is_honoured(capsys, factories, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = _run(capsys, "deploy", factories, "--full", "--weight-ranges")
    assert code == EXIT_OK, err
    widths = [len(line) for line in out.splitlines()]
    assert max(widths) <= columns
    assert f"{LONG}.1" in out.replace("│", " ").split()  # the site name, whole
    if columns == 160:
        assert max(widths) > 120  # wider than the default for a pipe


def test_weight_ranges_table_and_json(capsys, factories):
    code, out, err = _run(capsys, "deploy", factories, "--weight-ranges")
    assert code == EXIT_OK, err
    assert "largest |weight| per layer" in out and "merged away" in out
    code, out, err = _run(capsys, "deploy", factories, "--json")
    assert code == EXIT_OK, err
    ranges = {r["layer"]: r for r in json.loads(out)["weight_ranges"]}
    assert ranges["block.pointwise.0"]["after"] is None  # merged into block.dense.0
    assert ranges["block.dense.0"]["after"] > 0 and ranges["block.dense.0"]["before"] > 0
    model = Mixed()
    assert ranges["shared.conv"]["before"] == pytest.approx(
        float(model.shared.conv.weight.detach().abs().max())
    )


def test_spinner_counts_scopes():
    updates: list[str] = []

    class Status:
        def update(self, text: str) -> None:
            updates.append(text)

    class UI:
        @contextlib.contextmanager
        def step(self, text: str):
            yield Status()

    model = Mixed().eval()
    loaded = steps.Loaded(model, "mixed", (torch.randn(1, 4, 6, 6),), "test")
    args = argparse.Namespace(verify=False, allow_slower=False, debug=False)
    steps.deploy(loaded, args, UI(), None)  # type: ignore[arg-type]
    scopes = sum(1 for _ in model.modules()) - sum(
        1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU))
    )
    assert len(updates) == scopes
    assert updates[0].startswith(f"deploying mixed: scope 1/{scopes}, ")
    assert updates[-1].startswith(f"deploying mixed: scope {scopes}/{scopes}, ")


@pytest.mark.parametrize("noisy", [True, False])
def test_bench_flags_noisy_timings(capsys, factories, monkeypatch, noisy):
    steady = Timing((1e-3, 1.01e-3, 0.99e-3, 1e-3, 1.02e-3))
    jumpy = Timing((1e-3, 1.6e-3, 0.7e-3, 1.3e-3, 0.9e-3))

    def fake(fns, **kwargs):
        assert len(fns) == 2
        return [jumpy if noisy else steady, steady]

    monkeypatch.setattr("reparam.cli.bench.time_interleaved", fake)
    code, out, err = _run(capsys, "bench", factories, "--json", "-n", "5")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["noisy"] is noisy
    assert doc["train"]["noisy"] is noisy and doc["deployed"]["noisy"] is False
    assert doc["train"]["iqr_over_median"] == pytest.approx((jumpy if noisy else steady).iqr_ratio)
    warnings = [ln for ln in err.splitlines() if ln.startswith("reparam: warning:")]
    if noisy:
        assert len(warnings) == 1 and "noisy timings" in warnings[0]
        assert "train-form IQR" in warnings[0] and "deployed" not in warnings[0]
    else:
        assert warnings == []
    code, out, err = _run(capsys, "bench", factories, "-n", "5")
    assert code == EXIT_OK, err
    assert ("noisy" in out) is noisy


def test_bench_times_both_forms_interleaved(capsys, factories):
    code, out, err = _run(capsys, "bench", factories, "--json", "-n", "4", "-w", "1")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    for form in ("train", "deployed"):
        stats = doc[form]
        assert len(stats["times_ms"]) == 4
        assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
        assert stats["noisy"] == (stats["iqr_over_median"] > 0.10)
    assert doc["noisy"] == (doc["train"]["noisy"] or doc["deployed"]["noisy"])


def test_cli_reference_has_one_epilog():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "tools"))
    try:
        from gen_pages import cli_page
    finally:
        sys.path.pop(0)
    page = cli_page()
    assert page.count("exit codes:") == 1
    assert page.count("MODEL is a zoo name") == 1
    for command in ("deploy", "explain", "bench", "rules", "models"):
        assert f"## `reparam {command}`" in page
    assert "--model-kwargs" in page and "timm/NAME" in page and "--weight-ranges" in page

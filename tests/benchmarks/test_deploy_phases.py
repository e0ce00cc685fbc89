"""Smoke test of ``benchmarks/deploy_phases.py``: its timers still wrap the deploy's steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
pytest.importorskip("timm")
deploy_phases = pytest.importorskip("deploy_phases")


def test_every_phase_is_timed_and_put_back(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [getattr(owner, name) for owner, name, _ in deploy_phases._STEPS]
    argv = ["repvgg_a0", "--check", "--repeats", "1", "--size", "32"]
    assert deploy_phases.main(argv) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in out.splitlines()
        if line.startswith("| ") and line.count("|") == 3 and not line.startswith("| phase")
    }
    for _, _, label in deploy_phases._STEPS:
        assert label.strip() in {k.strip() for k in rows}
    # the steps ran: each phase that every deploy has took time
    for label in ("trace (all scopes)", "float64 check of rewritten scopes", "all scopes"):
        assert rows[label] > 0, label
    assert "| RepVggBlock |" in out
    assert [getattr(owner, name) for owner, name, _ in deploy_phases._STEPS] == steps

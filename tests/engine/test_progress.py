"""Progress of a deploy: logged to ``reparam.progress``, drawn as a bar, or sent to a callback."""

from __future__ import annotations

import logging

import torch
from torch import nn

import reparam
from reparam.demo import RepVGGStyleBlock
from reparam.progress import ScopeProgress, ScopeReporter


def _model() -> tuple[nn.Module, torch.Tensor]:
    return nn.Sequential(RepVGGStyleBlock(4), RepVGGStyleBlock(4)).eval(), torch.randn(1, 4, 5, 5)


# Sequential + 2 blocks + the two nn.Sequential branches (dense, pointwise) of each block
SCOPES = 7


def test_progress_is_logged_scope_by_scope(caplog):
    model, x = _model()
    with caplog.at_level(logging.DEBUG, logger="reparam"):
        reparam.deploy(model, x)
    records = [r for r in caplog.records if r.name == "reparam.progress"]
    per_scope = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
    assert len(per_scope) == SCOPES
    assert per_scope[0].startswith(f"deploy: scope 1/{SCOPES} (")
    assert per_scope[-1].startswith(f"deploy: scope {SCOPES}/{SCOPES} (<model>)")
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert infos[0] == f"deploy: {SCOPES} scopes to go"
    assert infos[-1].startswith(f"deploy: {SCOPES}/{SCOPES} scopes done in ")


def test_progress_callback_counts_scopes():
    model, x = _model()
    events: list[ScopeProgress] = []
    reparam.deploy_with_report(model, x, progress=events.append)
    assert [e.done for e in events] == list(range(1, SCOPES + 1))
    assert {e.total for e in events} == {SCOPES}
    assert events[-1].path == ""  # the whole model comes last
    assert all(a.elapsed <= b.elapsed for a, b in zip(events, events[1:], strict=False))


def test_progress_bar_on_stderr(capsys):
    model, x = _model()
    deployed = reparam.deploy(model, x, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "deploy" in err and f"{SCOPES}/{SCOPES}" in err and "scopes" in err
    assert reparam.relative_error(model(x), deployed(x)) <= 1e-5


def test_info_at_most_every_interval(caplog):
    clock_start = 0.0
    with caplog.at_level(logging.INFO, logger="reparam"):
        with ScopeReporter(100, start=clock_start, interval=1e9) as reporter:
            for i in range(100):
                reporter.scope_done(f"m{i}")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 2  # start and end: the interval never passed

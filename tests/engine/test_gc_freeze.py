"""deploy keeps the collector off the objects that existed before it, and leaves the
collector's state as it found it."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import reparam
from reparam.gc_freeze import frozen_heap


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()


def test_deploy_freezes_the_old_objects_and_unfreezes_them_after() -> None:
    assert gc.get_freeze_count() == 0
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(gc.get_freeze_count())
            return x

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Spy()).eval()
    reparam.deploy(model, torch.randn(1, 3, 8, 8))
    assert seen and all(n > 1000 for n in seen)  # frozen during the deploy's forwards
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_new_garbage_cycles_are_still_collected_inside() -> None:
    class Node:
        pass

    with frozen_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2


def test_a_process_that_froze_objects_itself_keeps_them_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The freeze count itself can drop during a deploy: a frozen object whose last
    # reference goes away is freed. So the test watches the calls, and one object it keeps.
    calls: list[str] = []

    def spy(name: str) -> None:
        real = getattr(gc, name)

        def call() -> None:
            calls.append(name)
            real()

        monkeypatch.setattr(gc, name, call)

    spy("freeze")
    spy("unfreeze")
    kept = [object()]
    gc.freeze()
    calls.clear()
    try:
        reparam.deploy(_net(), torch.randn(1, 3, 8, 8))
        assert calls == []
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for g in range(3) for o in gc.get_objects(generation=g))
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        reparam.deploy(_net(), torch.randn(1, 3, 8, 8))
        assert not gc.isenabled()
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_an_error_inside_unfreezes() -> None:
    try:
        with frozen_heap():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.get_freeze_count() == 0

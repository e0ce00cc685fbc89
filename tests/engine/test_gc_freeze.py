"""deploy keeps the collector off the objects that existed before it, and leaves the
collector's state as it found it."""

from __future__ import annotations

import gc

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


def test_a_process_that_froze_objects_itself_keeps_them_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        reparam.deploy(_net(), torch.randn(1, 3, 8, 8))
        assert gc.get_freeze_count() >= frozen
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

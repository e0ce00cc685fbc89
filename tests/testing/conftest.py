"""Fixtures for the tests of ``reparam.testing``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """Tiny convs run fastest on one thread; with several OpenMP threads on a busy 2-core
    machine each call can take tens of milliseconds instead of microseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""tests/models: the models' tests use tiny tensors (or the meta device), where intra-op
parallelism buys nothing and OpenMP spin-waiting on a busy 2-core machine costs 5-50x wall time.
Run each test here single-threaded and restore the caller's setting afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_intra_op_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

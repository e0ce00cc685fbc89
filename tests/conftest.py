"""Shared test configuration: hypothesis profiles and the device parametrization.

Profiles (select with ``HYPOTHESIS_PROFILE``):

* ``dev`` (default): few examples, fast feedback.
* ``ci``: the CI run (100 examples per property), derandomized so that a run is repeatable,
  ``deadline=None`` and ``print_blob=True`` so failures reproduce.
* ``slow``: >= 10,000 examples per property (use with ``pytest -m slow``).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=25, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("slow", max_examples=10_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Tiny tensors: one thread is several times faster than two fighting over 2 cores.
torch.set_num_threads(1)

# Exactness checks must not run through TF32 tensor cores.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every property test runs on the CPU, and on CUDA where there is one."""
    return torch.device(request.param)

"""Fixtures of the documentation tests (``tests/docs``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def child_env() -> dict[str, str]:
    """Environment for the example scripts and the site build, run as subprocesses.

    One intra-op thread per process: the examples use tiny tensors, and on a busy machine
    several processes each spinning up a thread pool are much slower than one thread each.
    The "MkDocs 2" banners that some theme and plugin versions print are switched off.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["NO_MKDOCS_2_WARNING"] = "1"
    env["DISABLE_MKDOCS_2_WARNING"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env

"""Shared test configuration: hypothesis profiles and the device parametrization.

Profiles (select with ``HYPOTHESIS_PROFILE``):

* ``dev`` (default): few examples, fast feedback.
* ``ci``: the CI run (100 examples per property), derandomized so that a run is repeatable,
  ``deadline=None`` and ``print_blob=True`` so failures reproduce.
* ``slow``: >= 10,000 examples per property (use with ``pytest -m slow``).
"""

from __future__ import annotations

import os
import time

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

# The driver's memo of tries that did not fire is checked at every use: a remembered try is
# run again and must not fire (reparam/try_memo.py).
os.environ.setdefault("REPARAM_CHECK_MEMO", "1")

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


# --- CPU time per test (opt-in: ``REPARAM_TEST_CPU=1``) -------------------------------------
# Wall-clock durations on a loaded machine say little; CPU seconds (this process plus the
# subprocesses a test waited for: CLI runs, the docs build, torchrun) are what a test costs on
# an unloaded one. Each phase's CPU rides on its report, so it reaches the controller under
# pytest-xdist too; the terminal summary prints the 60 dearest tests and the total.
_CPU = os.environ.get("REPARAM_TEST_CPU") == "1"
_CPU_KEY = "reparam_cpu_s"


def _cpu_now() -> float:
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


if _CPU:
    _cpu_by_test: dict[str, float] = {}
    _cpu_workers: dict[str, float] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item, call):
        report = yield
        report.user_properties.append((_CPU_KEY, item.stash.get(_CPU_PHASE, 0.0)))
        item.stash[_CPU_PHASE] = 0.0
        return report

    def _phase(hook_name: str):
        @pytest.hookimpl(wrapper=True)
        def hook(item, *args, **kwargs):
            start = _cpu_now()
            try:
                return (yield)
            finally:
                item.stash[_CPU_PHASE] = _cpu_now() - start

        hook.__name__ = hook_name
        return hook

    _CPU_PHASE = pytest.StashKey[float]()
    pytest_runtest_setup = _phase("pytest_runtest_setup")
    pytest_runtest_call = _phase("pytest_runtest_call")
    pytest_runtest_teardown = _phase("pytest_runtest_teardown")

    def pytest_runtest_logreport(report):
        for key, value in report.user_properties:
            if key == _CPU_KEY:
                _cpu_by_test[report.nodeid] = _cpu_by_test.get(report.nodeid, 0.0) + value

    def pytest_sessionfinish(session):
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: its whole CPU, imports and collection too
            workeroutput[_CPU_KEY] = _cpu_now()

    def pytest_testnodedown(node, error):
        _cpu_workers[node.gateway.id] = node.workeroutput.get(_CPU_KEY, 0.0)

    def pytest_terminal_summary(terminalreporter):
        write = terminalreporter.write_line
        ranked = sorted(_cpu_by_test.items(), key=lambda kv: -kv[1])
        terminalreporter.section("CPU seconds per test (REPARAM_TEST_CPU=1)")
        for nodeid, seconds in ranked[:60]:
            write(f"{seconds:9.2f}  {nodeid}")
        total = sum(_cpu_by_test.values())
        write(f"{total:9.2f}  total over {len(ranked)} tests ({total / 60:.1f} CPU-minutes)")
        if _cpu_workers:
            whole = sum(_cpu_workers.values())
            write(f"{whole:9.2f}  whole workers incl. imports and collection: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in sorted(_cpu_workers.items())))
        else:
            write(f"{_cpu_now():9.2f}  whole process incl. imports and collection")

"""Each property runs twice: in the normal suite with the profile's example count (``ci``:
100 per property), and under ``-m slow`` with 10,000 examples."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reparam
from reparam.testing.strategies import Case

# 10,000 per slow property; ``tools/slow_properties.py`` runs one in pieces (fewer examples
# each, distinct seeds, in parallel processes) through this variable
SLOW_EXAMPLES = int(os.environ.get("REPARAM_SLOW_EXAMPLES", "10000"))
_COUNT_FILE = os.environ.get("REPARAM_EXAMPLE_COUNT_FILE")
_done = 0


def count_example() -> None:
    """Note one example that passed (for a piece stopped by a time limit: the examples it had
    passed so far still count; ``benchmarks/slow_properties.py`` reads the file)."""
    global _done
    _done += 1
    if _COUNT_FILE and _done % 10 == 0:
        with open(_COUNT_FILE, "w", encoding="utf-8") as f:
            f.write(str(_done))
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def make_property(check: Callable[[Case], None],
                  strategy: Callable[[str], st.SearchStrategy[Case]],
                  *, fast_examples: int | None = None):
    """(fast, slow) test functions checking ``check`` on cases drawn from ``strategy(device)``.

    ``fast_examples`` caps the default-suite run of a property whose examples are costly
    (whole-model deploys); its slow twin always runs 10,000.
    """

    @pytest.mark.parametrize("device", DEVICES)
    @given(data=st.data())
    def fast(device: str, data: st.DataObject) -> None:
        check(data.draw(strategy(device)))
        count_example()

    @pytest.mark.slow
    @pytest.mark.parametrize("device", DEVICES)
    @settings(max_examples=SLOW_EXAMPLES)
    @given(data=st.data())
    def slow(device: str, data: st.DataObject) -> None:
        check(data.draw(strategy(device)))
        count_example()

    if fast_examples is not None:
        fast = settings(max_examples=fast_examples)(fast)
    return fast, slow


def deploy_exactly(case: Case, rtol: float = 1e-9) -> reparam.DeployResult:
    """Deploy ``case.module``; assert the input is untouched and the result exact."""
    before = {k: v.clone() for k, v in case.module.state_dict().items()}
    result = reparam.deploy_with_report(case.module, case.example_input, check=False)
    with torch.no_grad():
        expected = case.module(case.example_input)
        got = result.model(case.example_input)
    err = reparam.relative_error(expected, got)
    assert err <= rtol, f"relative error {err:.3e} on {case.description}"
    after = case.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k])
                                                  for k in before), "input model was mutated"
    report = result.report
    assert report.flops_after <= report.flops_before, case.description
    return result


def count_modules(model: torch.nn.Module, kinds: tuple[type, ...]) -> int:
    return sum(isinstance(m, kinds) for m in model.modules())

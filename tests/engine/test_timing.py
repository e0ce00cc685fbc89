"""The timing helper: warm-up, rotating interleaved rounds, medians, budget, noise measure."""

from __future__ import annotations

import pytest

from reparam.timing import NOISY_IQR, Timing, time_interleaved


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fns(clock: FakeClock, durations: dict[str, list[float]], calls: list[str]):
    def make(name: str):
        def fn() -> None:
            calls.append(name)
            clock.now += durations[name].pop(0)

        return fn

    return [make(n) for n in durations]


def test_rounds_rotate_and_warmup_is_not_timed():
    clock, calls = FakeClock(), []
    durations = {"a": [9.0, 1.0, 2.0, 3.0], "b": [9.0, 5.0, 6.0, 7.0]}
    ticks = []
    a, b = time_interleaved(
        _fns(clock, durations, calls), runs=3, warmup=1, clock=clock,
        on_call=lambda: ticks.append(1),
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert a.samples == (1.0, 2.0, 3.0) and b.samples == (5.0, 6.0, 7.0)
    assert (a.median, a.min, a.max) == (2.0, 1.0, 3.0)
    assert len(ticks) == 8


def test_budget_stops_rounds_and_falls_back_to_warmup():
    clock, calls = FakeClock(), []
    durations = {"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0, 1.0]}
    a, b = time_interleaved(
        _fns(clock, durations, calls), runs=3, warmup=1, budget_s=4.5, clock=clock
    )
    assert len(a.samples) == 1 and len(b.samples) == 1  # 2 s warm-up + 2 s round; no third
    clock, calls = FakeClock(), []
    durations = {"a": [3.0], "b": [4.0]}
    a, b = time_interleaved(
        _fns(clock, durations, calls), runs=5, warmup=1, budget_s=1.0, clock=clock
    )
    assert (a.samples, b.samples) == ((3.0,), (4.0,))  # nothing fitted: the warm-up counts


def test_noise_measures():
    steady = Timing((1.00, 1.01, 0.99, 1.00, 1.02, 1.00, 5.0))  # one outlier
    assert steady.iqr_ratio < NOISY_IQR and not steady.noisy()
    assert steady.spread == pytest.approx((5.0 - 0.99) / 1.00)
    noisy = Timing((1.0, 1.5, 0.8, 1.3, 0.9, 1.6))
    assert noisy.noisy() and noisy.iqr_ratio > NOISY_IQR
    assert Timing((2.0,)).iqr == 0.0 and not Timing((2.0,)).noisy()

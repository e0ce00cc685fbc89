"""One way to time code: warm-up calls, then interleaved rounds, medians, and a noise measure.

Used by ``reparam bench`` (train form against deployed), by the ``grouped_fc_as_bmm`` rule (conv
kernel against batched matmul, within a time budget) and meant for the benchmarks.

Interleaving — each round calls every function once, the order rotating from round to round —
spreads a slow patch of the machine (another process, a frequency change) over all of them
instead of charging it to whichever ran then, and no function always runs on the cache the
previous one left. The median of the rounds is the estimate; the interquartile range over the
median says how much to trust it (:attr:`Timing.noisy`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["NOISY_IQR", "Timing", "synchronize", "time_interleaved"]

NOISY_IQR = 0.10  # IQR / median above this: the run is flagged as noisy


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one function, one sample per round."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def iqr(self) -> float:
        """Interquartile range (0 for fewer than two samples)."""
        if len(self.samples) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q3 - q1

    @property
    def iqr_ratio(self) -> float:
        """IQR / median: the spread of the middle half of the samples, relative."""
        med = self.median
        return self.iqr / med if med > 0 else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median: the full range, relative (outliers included)."""
        med = self.median
        return (self.max - self.min) / med if med > 0 else 0.0

    def noisy(self, threshold: float = NOISY_IQR) -> bool:
        """Whether the middle half of the samples spreads over more than ``threshold`` of the
        median."""
        return self.iqr_ratio > threshold


def synchronize(device: torch.device | str | None) -> None:
    """Wait for ``device``'s queued kernels (no-op on the CPU)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cpu":
        return
    sync = getattr(getattr(torch, device.type, None), "synchronize", None)
    if sync is not None:
        sync(device)


def time_interleaved(
    fns: Sequence[Callable[[], Any]],
    *,
    runs: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    budget_s: float | None = None,
    on_call: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Timing]:
    """Time each of ``fns``: ``warmup`` untimed calls of each, then up to ``runs`` rounds in
    which every function is called once, in an order that rotates every round.

    Args:
        device: synchronized around every timed call (for asynchronous devices).
        budget_s: stop starting rounds once the time spent (warm-up included) plus the last
            round would exceed it; when not even one round fits, the last warm-up calls are the
            samples (``warmup`` must then be at least 1).
        on_call: called after every call, timed or not (progress bars).
        clock: seconds as a float; tests pass a fake one.
    """
    k = len(fns)
    begin = clock()
    warm: list[float] = [0.0] * k
    for _ in range(warmup):
        for i, fn in enumerate(fns):
            synchronize(device)
            t0 = clock()
            fn()
            synchronize(device)
            warm[i] = clock() - t0
            if on_call is not None:
                on_call()
    samples: list[list[float]] = [[] for _ in fns]
    last_round = sum(warm)
    for r in range(runs):
        if budget_s is not None and clock() - begin + last_round > budget_s:
            break
        last_round = 0.0
        for j in range(k):
            i = (r + j) % k
            synchronize(device)
            t0 = clock()
            fns[i]()
            synchronize(device)
            dt = clock() - t0
            samples[i].append(dt)
            last_round += dt
            if on_call is not None:
                on_call()
    if not samples[0]:
        if warmup < 1:
            raise ValueError("no round fitted the time budget and there was no warm-up call")
        samples = [[w] for w in warm]
    return [Timing(tuple(s)) for s in samples]

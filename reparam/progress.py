"""Progress of a deploy: scopes done of total and the time elapsed.

``deploy`` reports every finished scope to a :class:`ScopeReporter`, which

* logs to the ``reparam.progress`` logger (a child of ``reparam``): one DEBUG record per scope,
  and INFO records at the start, at most every ``interval`` seconds while it runs, and at the
  end — ``logging.basicConfig(level=logging.INFO)`` is enough to see a long deploy move;
* with ``progress=True``, draws a progress bar on stderr (rich);
* with ``progress=callable``, calls it with a :class:`ScopeProgress` after every scope (the
  command line's spinner counts scopes this way).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["ProgressCallback", "ScopeProgress", "ScopeReporter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScopeProgress:
    """One finished scope: ``done`` of ``total`` scopes, ``elapsed`` seconds since the start."""

    done: int
    total: int
    path: str  # the scope just finished ("" is the whole model)
    elapsed: float

    def __str__(self) -> str:
        return (
            f"scope {self.done}/{self.total} ({self.path or '<model>'}), "
            f"{self.elapsed:.1f} s elapsed"
        )


ProgressCallback = Callable[[ScopeProgress], None]


class ScopeReporter:
    """Context manager that counts finished scopes; see the module docstring."""

    def __init__(
        self,
        total: int,
        progress: bool | ProgressCallback | None = None,
        *,
        start: float | None = None,
        interval: float = 2.0,
    ) -> None:
        self.total, self.done, self.interval = total, 0, interval
        self.start = time.perf_counter() if start is None else start
        self._callback = progress if callable(progress) else None
        self._want_bar = progress is True
        self._bar: Any = None
        self._task: Any = None
        self._last_info = self.start

    def __enter__(self) -> ScopeReporter:
        log.info("deploy: %d scopes to go", self.total)
        if self._want_bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("deploy"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("scopes"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[scope]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("deploy", total=self.total, scope="")
            self._bar.start()
        return self

    def scope_done(self, path: str) -> None:
        """Call after each scope."""
        self.done += 1
        now = time.perf_counter()
        event = ScopeProgress(self.done, self.total, path, now - self.start)
        log.debug("deploy: %s", event)
        if now - self._last_info >= self.interval and self.done < self.total:
            self._last_info = now
            log.info("deploy: %s", event)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, scope=path or "<model>")
        if self._callback is not None:
            self._callback(event)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elapsed = time.perf_counter() - self.start
        if exc_type is None:
            log.info("deploy: %d/%d scopes done in %.1f s", self.done, self.total, elapsed)
        else:
            log.info("deploy: stopped after %d/%d scopes (%.1f s)", self.done, self.total, elapsed)

"""Terminal output: results on stdout (tables, or one JSON document), progress and errors on
stderr. Spinners and progress bars only when stderr is a terminal and ``--quiet`` is not set."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PIPE_WIDTH = 120  # width of tables written into a pipe or a file when COLUMNS is not set


def columns_from_env() -> int | None:
    """``COLUMNS`` as a width, when it is set to a positive integer."""
    value = os.environ.get("COLUMNS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class Terminal:
    """Where things are printed: results on stdout, progress and errors on stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        from rich.console import Console

        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.err = Console(stderr=True, highlight=False)
        out = Console(highlight=False)
        width = columns_from_env() or (None if out.is_terminal else PIPE_WIDTH)
        self.out = Console(highlight=False, width=width) if width else out

    @property
    def live(self) -> bool:
        """Whether to animate progress (never into a pipe or a file, never with --quiet)."""
        return not self.quiet and self.err.is_terminal

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[Any]:
        """A spinner on stderr while the block runs; yields the rich ``Status`` (None when
        nothing is animated), whose ``update(text)`` changes the line."""
        if not self.live:
            yield None
            return
        with self.err.status(text, spinner="dots") as status:
            yield status

    def print(self, *objects: Any) -> None:
        if not self.json:
            # plain lines (paths, messages) are never wrapped, so they can be copied and grepped;
            # tables keep the console width
            plain = all(isinstance(o, str) for o in objects)
            self.out.print(*objects, markup=False, highlight=False, soft_wrap=plain)

    def emit_json(self, payload: Any) -> None:
        sys.stdout.write(json.dumps(jsonable(payload), indent=2) + "\n")
        sys.stdout.flush()

    def error(self, message: str) -> None:
        # one plain line: never wrapped, never styled, so scripts can grep it
        print(f"reparam: error: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"reparam: warning: {message}", file=sys.stderr, flush=True)


def jsonable(obj: Any) -> Any:
    """Plain JSON: tuples as lists, non-finite floats as strings ("inf", "nan")."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)  # dtypes, devices, paths


def table(title: str | None, columns: Sequence[str | tuple[str, str]]) -> Any:
    """A rich table with a bold header; a column is a name or ``(name, justify)``."""
    from rich.table import Table

    result = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    for col in columns:
        name, justify = col if isinstance(col, tuple) else (col, "left")
        result.add_column(name, justify=justify)  # type: ignore[arg-type]
    return result


def text(value: Any) -> Any:
    """A table cell that is never read as rich markup (site names can hold brackets)."""
    from rich.text import Text

    return Text(str(value))

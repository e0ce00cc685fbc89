"""A :class:`~reparam.report.DeployReport` as text tables (rich), compact or full.

Compact (the default, ``str(report)``): the before/after summary, one row per rule (how often
it fired, how often it refused, its most frequent reasons), the norms left grouped by reason,
the scopes that did not trace. Full: every site that fired or refused, in network order.
Site names are never cut: their column does not wrap and the free-text column takes the rest.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reparam.report import DeployReport

TOP_REASONS = 3
LISTED = 3  # example sites per reason in the compact view
DEFAULT_WIDTH = 100
SKIPPED_SHOWN = 5  # scopes that did not trace, listed in the compact view


def default_width() -> int:
    """``$COLUMNS``, else the terminal's width, else 100."""
    value = os.environ.get("COLUMNS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return DEFAULT_WIDTH


def _shape(reason: str) -> str:
    """A reason with its quoted names and its numbers blanked, so that sites refused for the
    same cause group."""
    reason = re.sub(r"'[^']*'", "'…'", reason)
    return re.sub(r"\d[\d,._]*(e[+-]?\d+)?", "#", reason)


def top_reasons(reasons: Iterable[str], n: int = TOP_REASONS) -> list[tuple[int, str, bool]]:
    """The ``n`` most frequent reasons as ``(count, first text, all texts identical)``."""
    groups: dict[str, list[str]] = {}
    for r in reasons:
        groups.setdefault(_shape(r), []).append(r)
    ranked = sorted(groups.values(), key=len, reverse=True)[:n]
    return [(len(g), g[0], len(set(g)) == 1) for g in ranked]


KEY = {"no_wrap": True, "overflow": "fold"}  # site names: whole, on one line when they fit
FREE = {"ratio": 1, "overflow": "fold"}  # free text takes the remaining width
NUM = {"justify": "right", "no_wrap": True}
WHERE = {"overflow": "fold"}  # a list of sites: wraps between them


MIN_FREE = 24  # the free-text column gets at least this much, or the table is stacked


def _table(
    title: str, columns: Sequence[tuple[str, dict[str, Any]]], rows: list[list[str]], width: int
) -> Any:
    """A table whose key columns are as wide as their longest entry (never cut). When they
    leave too little room for the rest, each row is stacked instead: its keys on one line, the
    other cells indented below."""
    from rich.table import Table

    key_widths = [
        max([len(name), *(len(row[i]) for row in rows)]) if opts is KEY else 0
        for i, (name, opts) in enumerate(columns)
    ]
    others = [
        max([len(name), *(len(row[i]) for row in rows)])
        for i, (name, opts) in enumerate(columns)
        if opts is NUM
    ]
    needed = sum(key_widths) + sum(others) + 3 * len(columns) + 1
    if any(opts is FREE for _, opts in columns):
        needed += MIN_FREE
    table = Table(title=title, show_header=True, title_justify="left")
    if needed > width and any(key_widths):
        keys = [i for i, w in enumerate(key_widths) if w]
        table.add_column(" · ".join(columns[i][0] for i in keys), overflow="fold")
        for row in rows:
            rest = [
                f"{columns[i][0]}: {cell}" if columns[i][1] is NUM else cell
                for i, cell in enumerate(row)
                if i not in keys and cell
            ]
            lines = ["  ".join(row[i] for i in keys), *(f"    {r}" for r in rest)]
            table.add_row("\n".join(lines))
        return table
    for i, (name, opts) in enumerate(columns):
        if key_widths[i]:
            opts = {**opts, "min_width": key_widths[i]}
        table.add_column(name, **opts)
    for row in rows:
        table.add_row(*row)
    return table


def _summary(report: DeployReport, width: int) -> Any:
    rows = [["parameters", f"{report.params_before:,}", f"{report.params_after:,}"]]
    if report.flops_before is not None:
        rows.append(["FLOPs", f"{report.flops_before:,}", f"{report.flops_after:,}"])
    rows.append(
        [
            "largest |weight|",
            f"{report.weight_absmax_before:.4g}",
            f"{report.weight_absmax_after:.4g}",
        ]
    )
    if report.max_relative_error is not None:
        rows.append(["max relative error", "", f"{report.max_relative_error:.2e}"])
    rows.append(["conversion time", "", f"{report.seconds:.3f} s"])
    return _table("reparam deploy", [("", {}), ("before", NUM), ("after", NUM)], rows, width)


def _per_rule(report: DeployReport, width: int) -> Any:
    fired = Counter(r.rule for r in report.rewrites)
    refused: dict[str, list[str]] = {}
    for o in report.refusals:
        refused.setdefault(o.rule, []).append(o.reason)
    rows = []
    for rule in dict.fromkeys([*(r.rule for r in report.rewrites), *refused]):
        reasons = [
            f"{n}× {text}" if same else f"{n}× like: {text}"
            for n, text, same in top_reasons(refused.get(rule, []))
        ]
        rows.append([rule, str(fired[rule]), str(len(refused.get(rule, []))), "\n".join(reasons)])
    columns = [("rule", KEY), ("fired", NUM), ("refused", NUM), ("top reasons for refusing", FREE)]
    return _table("rules fired and refused, per rule", columns, rows, width)


def _where(paths: list[str]) -> str:
    shown = ", ".join(p or "<model>" for p in paths[:LISTED])
    return shown + (f" (+{len(paths) - LISTED} more)" if len(paths) > LISTED else "")


def _norms_compact(report: DeployReport, width: int) -> Any:
    groups: dict[str, list[str]] = {}
    for path, reason in report.unfolded_norms:
        groups.setdefault(reason, []).append(path)
    rows = [
        [str(len(paths)), _where(paths), reason]
        for reason, paths in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ]
    return _table(
        f"norms left unfolded: {len(report.unfolded_norms)}",
        [("count", NUM), ("where", WHERE), ("reason", FREE)],
        rows,
        width,
    )


def _fired_full(report: DeployReport, width: int) -> Any:
    rows = [
        [r.rule, r.site, r.detail, f"{r.weight_absmax_before:.3g}→{r.weight_absmax_after:.3g}"]
        for r in report.rewrites
    ]
    columns = [("rule", KEY), ("site", KEY), ("what", FREE), ("max |w|", NUM)]
    return _table("rules fired", columns, rows, width)


def _refused_full(report: DeployReport, width: int) -> Any:
    rows = [[o.rule, o.site, o.reason] for o in report.refusals]
    return _table(
        "not merged (and why)", [("rule", KEY), ("site", KEY), ("reason", FREE)], rows, width
    )


def _near_full(report: DeployReport, width: int) -> Any:
    rows = [[o.rule, o.site, o.reason] for o in report.open_near_misses()]
    columns = [("rule", KEY), ("site", KEY), ("step that failed", FREE)]
    return _table("near-misses (pattern found in part)", columns, rows, width)


def _norms_full(report: DeployReport, width: int) -> Any:
    rows = [[site, reason] for site, reason in report.unfolded_norms]
    return _table("norms left unfolded", [("norm", KEY), ("reason", FREE)], rows, width)


def _weight_ranges(report: DeployReport, width: int) -> Any:
    rows = []
    for w in report.weight_ranges:
        growth = w.growth
        rows.append(
            [
                w.layer,
                "new" if w.before is None else f"{w.before:.4g}",
                "merged away" if w.after is None else f"{w.after:.4g}",
                "" if growth is None else f"{growth:.3g}",
            ]
        )
    columns = [("layer", KEY), ("before", NUM), ("after", NUM), ("after / before", NUM)]
    return _table("largest |weight| per layer", columns, rows, width)


def render(
    report: DeployReport,
    width: int | None = None,
    *,
    full: bool = False,
    weight_ranges: bool = False,
) -> str:
    from rich.console import Console
    from rich.text import Text

    buf = io.StringIO()
    width = width or default_width()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)

    def line(message: str) -> None:
        console.print(Text(message))

    console.print(_summary(report, width))
    if full:
        if report.rewrites:
            console.print(_fired_full(report, width))
        if report.refusals:
            console.print(_refused_full(report, width))
        if report.unfolded_norms:
            console.print(_norms_full(report, width))
        if report.open_near_misses():
            console.print(_near_full(report, width))
    else:
        if report.rewrites or report.refusals:
            console.print(_per_rule(report, width))
        if report.unfolded_norms:
            console.print(_norms_compact(report, width))
    if weight_ranges and report.weight_ranges:
        console.print(_weight_ranges(report, width))
    skipped = report.skipped_scopes if full else report.skipped_scopes[:SKIPPED_SHOWN]
    for path, reason in skipped:
        line(f"skipped {path or '<model>'}: {reason}")
    if len(skipped) < len(report.skipped_scopes):
        line(f"... and {len(report.skipped_scopes) - len(skipped)} more skipped scopes")
    for rule, site, err in report.rolled_back:
        line(f"rolled back {rule} at {site}: relative error {err:.2e}")
    for note in report.notes:
        line(f"note: {note}")
    if not full and (report.rewrites or report.refusals or report.unfolded_norms or skipped):
        line(
            "every site: --full (report.render(full=True)); "
            "|w| per layer: --weight-ranges (weight_ranges=True)"
        )
    return buf.getvalue()

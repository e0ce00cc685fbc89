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
    """A reason with its numbers blanked, so that sites refused for the same cause group."""
    return re.sub(r"\d[\d,._]*(e[+-]?\d+)?", "#", reason)


def top_reasons(reasons: Iterable[str], n: int = TOP_REASONS) -> list[tuple[int, str, bool]]:
    """The ``n`` most frequent reasons as ``(count, first text, all texts identical)``."""
    groups: dict[str, list[str]] = {}
    for r in reasons:
        groups.setdefault(_shape(r), []).append(r)
    ranked = sorted(groups.values(), key=len, reverse=True)[:n]
    return [(len(g), g[0], len(set(g)) == 1) for g in ranked]


def _table(title: str, columns: Sequence[tuple[str, dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_header=True, title_justify="left")
    for name, opts in columns:
        table.add_column(name, **opts)
    return table


KEY = {"no_wrap": True, "overflow": "fold"}  # site names: whole, on one line when they fit
FREE = {"ratio": 1, "overflow": "fold"}  # free text takes the remaining width
NUM = {"justify": "right", "no_wrap": True}


def _summary(report: DeployReport) -> Any:
    table = _table("reparam deploy", [("", {}), ("before", NUM), ("after", NUM)])
    table.add_row("parameters", f"{report.params_before:,}", f"{report.params_after:,}")
    if report.flops_before is not None:
        table.add_row("FLOPs", f"{report.flops_before:,}", f"{report.flops_after:,}")
    table.add_row(
        "largest |weight|",
        f"{report.weight_absmax_before:.4g}",
        f"{report.weight_absmax_after:.4g}",
    )
    if report.max_relative_error is not None:
        table.add_row("max relative error", "", f"{report.max_relative_error:.2e}")
    table.add_row("conversion time", "", f"{report.seconds:.3f} s")
    return table


def _per_rule(report: DeployReport) -> Any:
    fired = Counter(r.rule for r in report.rewrites)
    refused: dict[str, list[str]] = {}
    for o in report.refusals:
        refused.setdefault(o.rule, []).append(o.reason)
    rules = list(dict.fromkeys([*(r.rule for r in report.rewrites), *refused]))
    columns = [("rule", KEY), ("fired", NUM), ("refused", NUM), ("top reasons for refusing", FREE)]
    table = _table("rules fired and refused, per rule", columns)
    for rule in rules:
        reasons = [
            f"{n}× {text}" if same else f"{n}× like: {text}"
            for n, text, same in top_reasons(refused.get(rule, []))
        ]
        table.add_row(rule, str(fired[rule]), str(len(refused.get(rule, []))), "\n".join(reasons))
    return table


def _where(paths: list[str]) -> str:
    shown = ", ".join(p or "<model>" for p in paths[:LISTED])
    return shown + (f" (+{len(paths) - LISTED} more)" if len(paths) > LISTED else "")


def _norms_compact(report: DeployReport) -> Any:
    groups: dict[str, list[str]] = {}
    for path, reason in report.unfolded_norms:
        groups.setdefault(reason, []).append(path)
    table = _table(
        f"norms left unfolded: {len(report.unfolded_norms)}",
        [("count", NUM), ("where", KEY), ("reason", FREE)],
    )
    for reason, paths in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        table.add_row(str(len(paths)), _where(paths), reason)
    return table


def _fired_full(report: DeployReport) -> Any:
    table = _table("rules fired", [("rule", KEY), ("site", KEY), ("what", FREE), ("max |w|", NUM)])
    for r in report.rewrites:
        table.add_row(
            r.rule, r.site, r.detail, f"{r.weight_absmax_before:.3g}→{r.weight_absmax_after:.3g}"
        )
    return table


def _refused_full(report: DeployReport) -> Any:
    table = _table("not merged (and why)", [("rule", KEY), ("site", KEY), ("reason", FREE)])
    for o in report.refusals:
        table.add_row(o.rule, o.site, o.reason)
    return table


def _norms_full(report: DeployReport) -> Any:
    table = _table("norms left unfolded", [("norm", KEY), ("reason", FREE)])
    for site, reason in report.unfolded_norms:
        table.add_row(site, reason)
    return table


def _weight_ranges(report: DeployReport) -> Any:
    table = _table(
        "largest |weight| per layer",
        [("layer", KEY), ("before", NUM), ("after", NUM), ("after / before", NUM)],
    )
    for w in report.weight_ranges:
        growth = w.growth
        table.add_row(
            w.layer,
            "new" if w.before is None else f"{w.before:.4g}",
            "merged away" if w.after is None else f"{w.after:.4g}",
            "" if growth is None else f"{growth:.3g}",
        )
    return table


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
    console = Console(
        file=buf, width=width or default_width(), force_terminal=False, color_system=None
    )

    def line(message: str) -> None:
        console.print(Text(message))

    console.print(_summary(report))
    if full:
        if report.rewrites:
            console.print(_fired_full(report))
        if report.refusals:
            console.print(_refused_full(report))
        if report.unfolded_norms:
            console.print(_norms_full(report))
    else:
        if report.rewrites or report.refusals:
            console.print(_per_rule(report))
        if report.unfolded_norms:
            console.print(_norms_compact(report))
    if weight_ranges and report.weight_ranges:
        console.print(_weight_ranges(report))
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

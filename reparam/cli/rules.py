"""``reparam rules``: the registered merge rules, in the order deploy tries them."""

from __future__ import annotations

import argparse

from reparam.cli.errors import EXIT_OK
from reparam.cli.terminal import Terminal, table, text

HELP = "list the registered merge rules"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options beyond --json."""


def run(args: argparse.Namespace, ui: Terminal) -> int:
    import reparam

    rules = reparam.list_rules()
    if ui.json:
        ui.emit_json(
            [
                {
                    "name": r.name,
                    "summary": r.summary,
                    "pattern": r.pattern,
                    "refuses_when": list(r.refuses_when),
                }
                for r in rules
            ]
        )
        return EXIT_OK
    listing = table(
        f"{len(rules)} rules, tried in this order", ["rule", "merges", "pattern", "refuses when"]
    )
    for r in rules:
        listing.add_row(
            text(r.name),
            text(r.summary),
            text(r.pattern),
            text("\n".join(f"• {w}" for w in r.refuses_when)),
        )
    ui.print(listing)
    return EXIT_OK

"""``reparam explain``: for every candidate site, which rule merged it or why not."""

from __future__ import annotations

import argparse

from reparam.cli import steps
from reparam.cli.errors import EXIT_FAILED, EXIT_OK, CLIError, oneline
from reparam.cli.options import rule_names
from reparam.cli.terminal import Terminal, table, text

HELP = "say for every candidate site which rule merged it or why not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options beyond the model options."""


def run(args: argparse.Namespace, ui: Terminal) -> int:
    import reparam

    rules = rule_names(args.rules)
    loaded = steps.load(args, ui)
    label = f"analysing {loaded.name}"
    with ui.step(label) as status:
        try:
            explanation = reparam.explain(
                loaded.model,
                loaded.inputs,
                rules=rules,
                allow_slower=args.allow_slower,
                progress=steps.scope_counter(status, label),
            )
        except Exception as exc:  # noqa: BLE001
            if args.debug:
                raise
            raise CLIError(
                f"explain of '{loaded.name}' failed: {oneline(exc)}", EXIT_FAILED
            ) from exc
    if ui.json:
        ui.emit_json(
            {
                "model": loaded.name,
                "input_shapes": loaded.shapes(),
                "input_source": loaded.input_source,
                "sites": [
                    dict(rule=s.rule, site=s.site, fired=s.fired, reason=s.reason)
                    for s in explanation.sites
                ],
                "skipped_scopes": [
                    dict(scope=p or "<model>", reason=r) for p, r in explanation.skipped_scopes
                ],
            }
        )
        return EXIT_OK
    ui.print(f"model: {loaded.name}")
    ui.print(f"input: {steps.describe_inputs(loaded)}")
    sites = table(
        f"{len(explanation.fired())} merged, {len(explanation.refused())} refused",
        ["", "rule", "site", "what / why not"],
    )
    for s in explanation.sites:
        sites.add_row(
            text("merged" if s.fired else "refused"), text(s.rule), text(s.site), text(s.reason)
        )
    if explanation.sites:
        ui.print(sites)
    else:
        ui.print("no candidate sites")
    for path, reason in explanation.skipped_scopes:
        ui.print(f"skipped {path or '<model>'}: {reason}")
    return EXIT_OK

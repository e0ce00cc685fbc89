"""``reparam models``: the zoo (``reparam_models``) with the parameter counts of both forms."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from reparam.cli.errors import EXIT_OK, CLIError
from reparam.cli.terminal import Terminal, table, text

HELP = "list the zoo models (reparam_models) with their parameter counts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pattern", nargs="?", metavar="PATTERN", help="shell-style filter, e.g. 'repmlpnet_*'"
    )


def zoo_rows(names: list[str], ui: Terminal) -> list[dict[str, Any]]:
    """Parameter counts of both forms, built on the meta device (no memory, no init cost)."""
    import reparam_models
    from reparam.report import count_params

    rows = []
    with ui.step(f"building {len(names)} model(s) on the meta device"):
        for name in names:
            with torch.device("meta"):
                train = reparam_models.create_model(name)
                infer = reparam_models.create_model(name, inference=True)
            cfg = getattr(train, "pretrained_cfg", None) or {}
            size = cfg.get("input_size") if isinstance(cfg, dict) else None
            rows.append(
                {
                    "name": name,
                    "input_size": list(size) if size else None,
                    "params": count_params(train),
                    "params_inference_form": count_params(infer),
                    "class": type(train).__name__,
                }
            )
    return rows


def run(args: argparse.Namespace, ui: Terminal) -> int:
    import reparam_models

    names = reparam_models.list_models(args.pattern)
    if not names:
        raise CLIError(f"no zoo model matches '{args.pattern}' (`reparam models` lists them all)")
    rows = zoo_rows(names, ui)
    if ui.json:
        ui.emit_json(rows)
        return EXIT_OK
    listing = table(
        f"{len(rows)} zoo models (reparam_models)",
        ["name", "class", "input", ("params", "right"), ("params, inference form", "right")],
    )
    for r in rows:
        size = "×".join(map(str, r["input_size"])) if r["input_size"] else "-"
        listing.add_row(
            text(r["name"]),
            text(r["class"]),
            size,
            f"{r['params']:,}",
            f"{r['params_inference_form']:,}",
        )
    ui.print(listing)
    ui.print(
        "deploy one with `reparam deploy NAME`, or a trained checkpoint with "
        "`reparam deploy CHECKPOINT --model NAME`"
    )
    return EXIT_OK

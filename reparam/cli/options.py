"""Argument types and the options shared by several commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from reparam.cli.errors import CLIError
from reparam.cli.loading import parse_model_kwargs


def shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape: give positive integers separated by commas, e.g. 1,3,224,224"
        )
    return dims


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a non-negative integer")
    return value


def model_kwargs(text: str) -> dict[str, Any]:
    try:
        return parse_model_kwargs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def output_path(value: str | None, option: str) -> Path | None:
    """Check an output file can be written before spending minutes on the model."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise CLIError(f"{option} '{value}' is a folder, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"{option} '{value}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"{option} '{value}': folder '{parent}' is not writable")
    return path


def rule_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    import reparam

    names = [n.strip() for n in value.split(",") if n.strip()]
    known = reparam.default_registry().names()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CLIError(
            f"--rules: unknown rule(s) {', '.join(repr(n) for n in unknown) or '(none given)'}; "
            f"known rules: {', '.join(known)}"
        )
    return names


def common_options() -> argparse.ArgumentParser:
    """--json, --quiet, --debug: every command has them."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (and nothing else there)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    return common


def model_options() -> argparse.ArgumentParser:
    """Which model, which input, which rules: the commands that deploy have them."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument(
        "source",
        nargs="?",
        metavar="MODEL",
        help="zoo name, timm/NAME, package.module:factory, or a saved model or "
        "checkpoint file (default: the built-in demo)",
    )
    opts.add_argument(
        "--model",
        dest="arch",
        metavar="NAME",
        help="architecture (zoo name, timm/NAME or package.module:factory) to build "
        "and load the state_dict checkpoint MODEL into",
    )
    opts.add_argument(
        "--model-kwargs",
        type=model_kwargs,
        metavar="K=V,...",
        help="keyword arguments for the factory, e.g. num_classes=10,drop_rate=0.1 "
        "(ints, floats, true/false/none, otherwise strings)",
    )
    opts.add_argument(
        "--input-shape",
        type=shape,
        action="append",
        metavar="SHAPE",
        help="example input shape, e.g. 1,3,224,224 (repeat for several "
        "inputs; default: the model's pretrained_cfg['input_size'])",
    )
    opts.add_argument(
        "--rules", metavar="R1,R2", help="use only these rules (names from `reparam rules`)"
    )
    opts.add_argument(
        "--allow-slower", action="store_true", help="apply merges the cost model says are slower"
    )
    return opts

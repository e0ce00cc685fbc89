"""The ``reparam`` command line: deploy, explain, list rules.

Exit codes: 0 success, 1 the model could not be deployed exactly, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _load_model(spec: str | None, input_shape: str | None) -> tuple[nn.Module, Any, str]:
    """A model from ``None`` (the built-in demo), ``package.module:factory``, a zoo name, or a
    file saved with ``torch.save(model)``."""
    if spec is None:
        from reparam.demo import demo_model

        model, x = demo_model()
        return model, x, "built-in demo (RepVGG / ACNet / MobileOne-style blocks)"
    shape = tuple(int(s) for s in input_shape.split(",")) if input_shape else None
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise SystemExit(_usage(f"cannot import '{spec}': {err}")) from err
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    elif Path(spec).exists():
        model = torch.load(spec, weights_only=False, map_location="cpu")
    else:
        try:
            import reparam_models

            model = reparam_models.create_model(spec)
        except (ImportError, KeyError, ValueError) as err:
            raise SystemExit(_usage(f"'{spec}' is no file, no module:factory and no zoo model "
                                    f"({err})")) from err
    if not isinstance(model, nn.Module):
        raise SystemExit(_usage(f"'{spec}' did not give a torch.nn.Module"))
    x = torch.randn(shape) if shape else None
    return model.eval(), x, spec


def _usage(msg: str) -> int:
    print(f"reparam: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_deploy(args: argparse.Namespace) -> int:
    import reparam

    model, x, name = _load_model(args.model, args.input_shape)
    try:
        result = reparam.deploy_with_report(model, x, allow_slower=args.allow_slower)
    except reparam.ReparamError as err:
        print(f"reparam: {err}", file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        torch.save(result.model, args.output)
    if args.json:
        print(json.dumps({"model": name, **result.report.to_dict()}, default=str, indent=2))
    else:
        print(f"model: {name}")
        print(result.report.render())
        if args.output:
            print(f"saved deployed model to {args.output}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    import reparam

    model, x, name = _load_model(args.model, args.input_shape)
    explanation = reparam.explain(model, x)
    if args.json:
        print(json.dumps([s.__dict__ for s in explanation.sites], indent=2))
    else:
        print(f"model: {name}")
        print(explanation.render())
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    import reparam

    rules = reparam.list_rules()
    if args.json:
        print(json.dumps([{"name": r.name, "summary": r.summary, "pattern": r.pattern,
                           "refuses_when": list(r.refuses_when)} for r in rules], indent=2))
    else:
        for r in rules:
            print(f"{r.name:<20} {r.summary}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reparam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("deploy", cmd_deploy, "deploy a model and print the report"),
                            ("explain", cmd_explain, "why each candidate site merged or not")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("model", nargs="?", help="zoo name, package.module:factory or a saved "
                       "model file (default: the built-in demo)")
        p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "deploy":
            p.add_argument("-o", "--output", help="save the deployed model (torch.save)")
            p.add_argument("--allow-slower", action="store_true",
                           help="apply merges the cost model says are slower")
        p.set_defaults(func=fn)
    p = sub.add_parser("rules", help="list the registered merge rules")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The argument parser and the entry point: one subcommand per module of this package."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from reparam.cli import bench, deploy, explain, models, rules
from reparam.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CLIError, oneline
from reparam.cli.options import common_options, model_options
from reparam.cli.terminal import Terminal

EPILOG = """\
MODEL is a zoo name (see `reparam models`), timm/NAME (a timm architecture, no weights are
downloaded), package.module:factory, or a file saved with torch.save(model) (unpickled: load
only files you trust; the current folder is importable); a state_dict checkpoint needs
--model NAME to build the architecture. Without MODEL the built-in demo network is used.

exit codes: 0 done, 1 not deployable exactly (or the ONNX file does not match),
2 bad arguments or input (missing or unloadable file, not an nn.Module, unknown name)."""

# (name, module, takes a model): the module has HELP, add_arguments(parser) and run(args, ui)
COMMANDS = (
    ("deploy", deploy, True),
    ("explain", explain, True),
    ("bench", bench, True),
    ("rules", rules, False),
    ("models", models, False),
)


def build_parser(*, epilog_on_commands: bool = True) -> argparse.ArgumentParser:
    """The ``reparam`` parser. The epilog (what MODEL can be, the exit codes) is on the main
    help and, unless ``epilog_on_commands=False`` (the docs' reference prints it once), on
    every command that takes a model."""
    import reparam

    common, model_opts = common_options(), model_options()
    parser = argparse.ArgumentParser(
        prog="reparam",
        description="Structural re-parameterization: merge training-time multi-branch "
        "structures into plain convs and FCs, exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reparam {reparam.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, takes_model in COMMANDS:
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            parents=[model_opts, common] if takes_model else [common],
            epilog=EPILOG if takes_model and epilog_on_commands else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    ui = Terminal(args)
    try:
        return int(args.func(args, ui))
    except CLIError as err:
        ui.error(str(err))
        if ui.json:
            ui.emit_json({"error": str(err), "exit_code": err.code})
        return err.code
    except KeyboardInterrupt:
        ui.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - no traceback unless asked for
        if getattr(args, "debug", False):
            raise
        ui.error(f"unexpected {oneline(exc)} (rerun with --debug for the traceback)")
        return EXIT_FAILED

"""The ``reparam`` command line: deploy, explain, bench, list rules and zoo models.

Exit codes: 0 success, 1 the model could not be deployed exactly (or its export did not match),
2 bad arguments or input (missing or unloadable file, not an nn.Module, unknown model name).

The command line is a thin layer over the library: every subcommand loads a model
(:func:`reparam.cli.loading.load_model`, usable from Python), calls one library function
(:func:`reparam.deploy_with_report`, :func:`reparam.explain`, ...) and prints the result as
tables (stdout), with progress on stderr when stderr is a terminal. ``--json`` prints one JSON
document on stdout and nothing else there.

Where things are: ``app`` (parser, entry point), ``terminal`` (output), ``options`` (argument
types), ``loading`` (models from names and files), ``steps`` (load and deploy, shared by the
commands), and one module per command: ``deploy``, ``explain``, ``bench``, ``rules``, ``models``.
"""

from reparam.cli.app import EPILOG, build_parser, main
from reparam.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError
from reparam.cli.loading import LoadedModel, ModelLoadError, load_model, parse_model_kwargs

__all__ = [
    "EPILOG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "LoadedModel",
    "ModelLoadError",
    "build_parser",
    "load_model",
    "main",
    "parse_model_kwargs",
]

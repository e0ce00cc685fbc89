"""The steps deploy, explain and bench share: load the model with its example input, deploy it
(with a spinner that counts scopes), and the wording around both."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reparam.cli.errors import EXIT_FAILED, CLIError, oneline
from reparam.cli.loading import ModelLoadError, example_inputs, load_model, probe
from reparam.cli.terminal import Terminal
from reparam.progress import ProgressCallback, ScopeProgress


@dataclass
class Loaded:
    model: nn.Module
    name: str
    inputs: tuple[torch.Tensor, ...] | None
    input_source: str | None

    def shapes(self) -> list[list[int]] | None:
        return [list(x.shape) for x in self.inputs] if self.inputs else None


def load(args: argparse.Namespace, ui: Terminal) -> Loaded:
    """The model and example input the command line's options name."""
    label = args.source or args.arch or "the built-in demo"
    try:
        with ui.step(f"loading {label}"):
            loaded = load_model(args.source, arch=args.arch, model_kwargs=args.model_kwargs)
        model, name = loaded.model, loaded.name
        if isinstance(model, torch.jit.ScriptModule):
            raise CLIError(f"'{name}' is a TorchScript module, which cannot be re-parameterized")
        if args.input_shape:
            inputs, source = example_inputs(model, args.input_shape)
        elif args.source is None and args.arch is None:
            from reparam.demo import demo_model

            inputs, source = (demo_model()[1],), "demo input"
        else:
            inputs, source = example_inputs(model)
        if inputs:
            probe(model, inputs, name)
    except ModelLoadError as exc:
        raise CLIError(str(exc)) from exc
    return Loaded(model, name, inputs, source)


def need_inputs(loaded: Loaded, what: str) -> tuple[torch.Tensor, ...]:
    if not loaded.inputs:
        raise CLIError(
            f"{what} needs an example input and '{loaded.name}' has no "
            "pretrained_cfg['input_size']: pass --input-shape, e.g. 1,3,224,224"
        )
    return loaded.inputs


def describe_inputs(loaded: Loaded) -> str:
    if not loaded.inputs:
        return "none (rules that need shapes do not fire; no numerical check)"
    shapes = ", ".join("×".join(str(d) for d in x.shape) for x in loaded.inputs)
    return f"{shapes} ({loaded.input_source})"


def scope_counter(status: Any, label: str) -> ProgressCallback | bool:
    """A deploy progress callback that shows ``label: scope 3/40, 12 s`` on the spinner
    (``False``, no progress, when nothing is animated)."""
    if status is None:
        return False

    def show(event: ScopeProgress) -> None:
        status.update(f"{label}: scope {event.done}/{event.total}, {event.elapsed:.0f} s")

    return show


def deploy(loaded: Loaded, args: argparse.Namespace, ui: Terminal, rules: list[str] | None) -> Any:
    """``reparam.deploy_with_report`` with a spinner saying which scope of how many."""
    import reparam

    label = f"deploying {loaded.name}"
    with ui.step(label) as status:
        try:
            return reparam.deploy_with_report(
                loaded.model,
                loaded.inputs,
                rules=rules,
                verify=getattr(args, "verify", False),
                allow_slower=args.allow_slower,
                progress=scope_counter(status, label),
            )
        except reparam.ReparamError as exc:
            raise CLIError(
                f"deploy of '{loaded.name}' failed: {oneline(exc)}", EXIT_FAILED
            ) from exc
        except Exception as exc:  # noqa: BLE001
            if args.debug:
                raise
            raise CLIError(
                f"deploy of '{loaded.name}' failed: {oneline(exc)} (--debug shows the traceback)",
                EXIT_FAILED,
            ) from exc

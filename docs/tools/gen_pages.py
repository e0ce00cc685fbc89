"""Pages generated at build time (added to the site by ``docs/hooks.py``).

* ``reference/rules.md``: the rule catalogue, read from the rule registry;
* ``reference/zoo.md``: the model zoo table, built from ``reparam_models`` (parameters and
  MACs computed now, on the meta device: no weights are allocated, nothing is cached);
* ``reference/cli.md``: the command line, from the argparse parser.

Nothing here is checked in: the pages always describe the code being documented.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rst import rst_to_markdown  # noqa: E402

log = logging.getLogger("mkdocs.plugins.reparam_docs")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    """A code span for text that may itself hold backticks."""
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --------------------------------------------------------------------------------------------
# rule catalogue


def rules_page() -> str:
    import reparam

    rules = reparam.list_rules()
    out = [
        "# Rule catalogue",
        "",
        "Generated at build time from the rule registry (`reparam.list_rules()`), so it lists",
        "exactly the rules this version applies, in the order `deploy` tries them. "
        "`reparam rules` prints the same list in a terminal. How the rules work together is "
        "explained in [The merge algebra](../concepts/merge-algebra.md); to add one, see "
        "[Write your own rule](../tutorials/custom-rule.md).",
        "",
        "| # | rule | pattern | merges |",
        "|--:|------|---------|--------|",
    ]
    for i, rule in enumerate(rules, 1):
        out.append(
            f"| {i} | [`{rule.name}`](#{rule.name}) | {_cell(_code(rule.pattern))} "
            f"| {_cell(rule.summary)} |"
        )
    for i, rule in enumerate(rules, 1):
        cls = type(rule)
        out += [
            "",
            f"## `{rule.name}` {{#{rule.name}}}",
            "",
            f"*Rule {i} of {len(rules)}, class `{cls.__module__}.{cls.__qualname__}`.*",
            "",
            f"**Merges:** {rule.summary}.",
            "",
            f"**Pattern:** {_code(rule.pattern)}",
            "",
        ]
        if rule.refuses_when:
            out.append("**Refuses when:**")
            out.append("")
            out += [f"- {reason}" for reason in rule.refuses_when]
            out.append("")
        maths = rst_to_markdown(rule.maths).strip()
        if maths:
            out += ['???+ note "The maths and when it is exact (from the rule\'s module)"', ""]
            out += [f"    {line}" if line.strip() else "" for line in maths.splitlines()]
            out.append("")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# model zoo


def _macs(model: torch.nn.Module, size: tuple[int, ...], device: str) -> int:
    x = torch.zeros((1, *size), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops()) // 2  # the counter counts a multiply-add as 2


def _measure(name: str, inference: bool) -> tuple[int, int, tuple[int, ...], str]:
    """(params, MACs, input size, summary) of one zoo model, on the meta device if it can."""
    import reparam_models

    try:
        with torch.device("meta"):
            model = reparam_models.create_model(name, inference=inference).eval()
        device = "meta"
        size = tuple(model.pretrained_cfg["input_size"])
        macs = _macs(model, size, device)
    except Exception as err:  # noqa: BLE001 - fall back to a real forward on the CPU
        log.info("zoo: %s on the meta device failed (%s); using the CPU", name, err)
        model = reparam_models.create_model(name, inference=inference).eval()
        size = tuple(model.pretrained_cfg["input_size"])
        macs = _macs(model, size, "cpu")
    params = sum(p.numel() for p in model.parameters())
    factory = reparam_models.model_entrypoint(name)  # for the summary line only
    doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
    return params, macs, size, doc[0] if doc else ""


def zoo_page() -> str:
    import reparam_models

    start = time.perf_counter()
    rows = []
    for name in reparam_models.list_models():
        params, macs, size, summary = _measure(name, inference=False)
        params_inf, macs_inf, _, _ = _measure(name, inference=True)
        rows.append(
            f"| `{name}` | {'×'.join(map(str, size[1:]))} | {params / 1e6:.2f} M "
            f"| {macs / 1e9:.2f} G | {params_inf / 1e6:.2f} M | {macs_inf / 1e9:.2f} G "
            f"| {_cell(summary)} |"
        )
    log.info("zoo: %d models measured in %.1f s", len(rows), time.perf_counter() - start)
    return "\n".join(
        [
            "# Model zoo",
            "",
            "The RepMLP family in `reparam_models`, as registered in this version "
            "(`reparam_models.list_models()`). Every number below is **computed at build "
            "time**: each model is built on PyTorch's `meta` device (shapes only, no memory, "
            "no weights) in its training form and in its inference form "
            "(`create_model(name, inference=True)`, for loading deployed checkpoints), and "
            "one forward pass at batch size 1 and the model's own input size is counted with "
            "`torch.utils.flop_counter`. Nothing is cached or checked in.",
            "",
            "MACs are multiply-accumulates of the convolutions and matrix products (half of "
            "the counter's FLOPs); norms, activations, pooling and element-wise ops are not "
            "counted. The description is the first line of the model's factory docstring; "
            "figures quoted there come from the papers.",
            "",
            "| model | input | params (train) | MACs (train) | params (inference) "
            "| MACs (inference) | description |",
            "|-------|------:|---------------:|-------------:|-------------------:"
            "|-----------------:|-------------|",
            *rows,
            "",
            "Build any of them with `reparam_models.create_model(name)`; deploy it with "
            "`reparam.deploy(model)` (the example input comes from "
            "`model.pretrained_cfg['input_size']`) or from a shell with "
            "`reparam deploy NAME`. See [RepMLPNet: train vs deploy]"
            "(../tutorials/repmlpnet.md) and [RepMLPNet as a segmentation backbone]"
            "(../tutorials/segmentation.md).",
            "",
            "The models follow timm's conventions (`pretrained_cfg`, `reset_classifier`, "
            "`features_only` with `out_indices`, `set_grad_checkpointing`, `reparameterize()`) "
            "and are registered with timm when it is installed; the baseline `resnet50` is "
            "`reparam_resnet50` there, as timm has its own. No weights are hosted: "
            "`list_models(pretrained=True)` lists the models with a local weights file. See "
            "[the zoo as a timm model family]"
            "(../tutorials/timm.md#the-zoo-as-a-timm-model-family).",
            "",
        ]
    )


# --------------------------------------------------------------------------------------------
# command line


def cli_page() -> str:
    import argparse

    from reparam.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"
    try:
        parser = build_parser()
        sections = [("reparam", parser.format_help())]
        for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers here only
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    sections.append((f"reparam {name}", sub.format_help()))
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    out = [
        "# Command line",
        "",
        "Installing the package puts a `reparam` command on your path (`python -m reparam` "
        "does the same). The help texts below are generated from its argument parser when "
        "the site is built, so they describe this version.",
        "",
        "```bash",
        "reparam deploy                                   # the demo network, with its report",
        "reparam deploy repmlpnet_t224 -o deployed.pt     # a zoo model, saved deployed",
        "reparam explain mypkg.models:build --input-shape 1,3,64,64",
        "reparam rules --json",
        "```",
    ]
    for title, text in sections:
        out += ["", f"## `{title}`", "", "```text", text.rstrip(), "```"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def generated_pages() -> dict[str, str]:
    """Site path -> Markdown of every generated page."""
    builders = {
        "reference/rules.md": rules_page,
        "reference/zoo.md": zoo_page,
        "reference/cli.md": cli_page,
    }
    pages = {}
    for path, build in builders.items():
        with contextlib.redirect_stdout(io.StringIO()):  # keep model constructors quiet
            pages[path] = build()
    return pages


if __name__ == "__main__":  # preview: python docs/tools/gen_pages.py reference/rules.md
    for name, text in generated_pages().items():
        if name in sys.argv[1:] or len(sys.argv) == 1:
            print(text)

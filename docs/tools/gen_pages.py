"""Pages generated at build time (added to the site by ``docs/hooks.py``).

* ``reference/rules.md``: the rule catalogue, read from the rule registry;
* ``reference/zoo.md``: the model zoo table, built from ``reparam_models`` (parameters and
  FLOPs computed now, on the meta device: no weights are allocated, nothing is cached);
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


def _flops(model: torch.nn.Module, size: tuple[int, ...], device: str) -> int:
    """FLOPs of one forward at batch size 1, counted like ``reparam``'s report does."""
    x = torch.zeros((1, *size), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def _measure(name: str, inference: bool) -> tuple[int, int, tuple[int, ...], str]:
    """(params, FLOPs, input size, summary) of one zoo model, on the meta device if it can."""
    import reparam_models

    try:
        with torch.device("meta"):
            model = reparam_models.create_model(name, inference=inference).eval()
        device = "meta"
        size = tuple(model.pretrained_cfg["input_size"])
        flops = _flops(model, size, device)
    except Exception as err:  # noqa: BLE001 - fall back to a real forward on the CPU
        log.info("zoo: %s on the meta device failed (%s); using the CPU", name, err)
        model = reparam_models.create_model(name, inference=inference).eval()
        size = tuple(model.pretrained_cfg["input_size"])
        flops = _flops(model, size, "cpu")
    params = sum(p.numel() for p in model.parameters())
    factory = reparam_models.model_entrypoint(name)  # for the summary line only
    doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
    return params, flops, size, doc[0] if doc else ""


def zoo_page() -> str:
    import reparam_models

    start = time.perf_counter()
    rows, about = [], []
    for name in reparam_models.list_models():
        params, flops, size, summary = _measure(name, inference=False)
        params_inf, flops_inf, _, _ = _measure(name, inference=True)
        rows.append(
            f"| `{name}` | {'×'.join(map(str, size[1:]))} | {params / 1e6:.2f} "
            f"| {params_inf / 1e6:.2f} | {flops / 1e9:.2f} | {flops_inf / 1e9:.2f} |"
        )
        about.append(f"`{name}`\n:   {summary or 'no description'}\n")
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
            "**FLOPs** are counted as everywhere in `reparam` (the deploy report, "
            "`reparam deploy`): two per multiply-add of the convolutions and matrix products; "
            "norms, activations, pooling and element-wise ops are not counted (see "
            "[counting cost](../concepts/deploy.md#counting-cost-flops)). The papers, and the "
            "figures quoted from them in the descriptions below, count multiply-accumulates "
            "(MACs): halve the FLOPs here to compare.",
            "",
            "| model | input | params, M (train) | params, M (inference) | GFLOPs (train) "
            "| GFLOPs (inference) |",
            "|-------|------:|---------------:|-------------------:|--------------:"
            "|------------------:|",
            *rows,
            "",
            "## The models",
            "",
            "The first line of each model's factory docstring.",
            "",
            *about,
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


def _prose(text: str) -> list[str]:
    """A help text wrapped for a terminal, as Markdown paragraphs (one line each)."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return [line for p in paragraphs if p for line in (p, "")]


def cli_page() -> str:
    import argparse

    from reparam.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"  # what fits the page's code column without scrolling
    try:
        parser = build_parser(epilog_on_commands=False)
        # The description and the epilog of the top-level parser are prose: they go on the
        # page once, as text, and each command's help leaves out an epilog shown there.
        description, shared = parser.description or "", parser.epilog or ""
        parser.description = parser.epilog = None
        sections = [("reparam", parser.format_help(), False)]
        for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers here only
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    takes_shared = bool(shared) and sub.epilog == shared
                    if takes_shared:
                        sub.epilog = None
                    sections.append((f"reparam {name}", sub.format_help(), takes_shared))
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    out = [
        "# Command line",
        "",
        *_prose(description),
        "Installing the package puts a `reparam` command on your path (`python -m reparam` "
        "does the same). The help texts below are generated from its argument parser when "
        "the site is built, so they describe this version.",
        "",
        "```bash",
        "reparam deploy                                # the demo network and its report",
        "reparam deploy repmlpnet_t224 -o deployed.pt  # a zoo model, saved deployed",
        "reparam deploy timm/repvit_m0_9 --model-kwargs num_classes=10",
        "reparam deploy my_model.pt --full             # a saved model, every site listed",
        "reparam explain mypkg.models:build --input-shape 1,3,64,64",
        "reparam rules --json",
        "```",
    ]
    if shared:
        out += ["", "## MODEL and exit codes {#model-and-exit-codes}", "", *_prose(shared)]
    for title, text, takes_shared in sections:
        out += ["", f"## `{title}`", ""]
        if takes_shared:
            out += ["MODEL and the exit codes: [as above](#model-and-exit-codes).", ""]
        out += ["```text", text.rstrip(), "```"]
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

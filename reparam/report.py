"""What deploy did: rules fired per site, refusals with reasons, params/FLOPs, weight ranges."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reparam.rules.base import Rewrite, SiteOutcome


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: tuple[Any, ...]) -> int | None:
    """FLOPs of one forward, from ``torch.utils.flop_counter`` (None without inputs)."""
    if not inputs:
        return None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops())


@dataclass
class DeployReport:
    rewrites: list[Rewrite] = field(default_factory=list)
    refusals: list[SiteOutcome] = field(default_factory=list)
    skipped_scopes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rolled_back: list[tuple[str, str, float]] = field(default_factory=list)
    unfolded_norms: list[tuple[str, str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None
    flops_after: int | None = None
    weight_absmax_before: float = 0.0
    weight_absmax_after: float = 0.0
    max_relative_error: float | None = None
    checked_scopes: int = 0  # rewritten modules checked in float64 on their own inputs
    seconds: float = 0.0

    def fired(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rewrites:
            counts[r.rule] = counts.get(r.rule, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fired"] = self.fired()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def render(self, width: int = 110) -> str:
        from rich.console import Console
        from rich.table import Table

        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        summary = Table(title="reparam deploy", show_header=True)
        summary.add_column("")
        summary.add_column("before", justify="right")
        summary.add_column("after", justify="right")
        summary.add_row("parameters", f"{self.params_before:,}", f"{self.params_after:,}")
        if self.flops_before is not None:
            summary.add_row("FLOPs", f"{self.flops_before:,}", f"{self.flops_after:,}")
        summary.add_row(
            "largest |weight|",
            f"{self.weight_absmax_before:.4g}",
            f"{self.weight_absmax_after:.4g}",
        )
        if self.max_relative_error is not None:
            summary.add_row("max relative error", "", f"{self.max_relative_error:.2e}")
        summary.add_row("conversion time", "", f"{self.seconds:.3f} s")
        console.print(summary)
        if self.rewrites:
            fired = Table(title="rules fired", show_header=True)
            for col in ("rule", "site", "what", "|w| before→after"):
                fired.add_column(col)
            for r in self.rewrites:
                fired.add_row(
                    r.rule,
                    r.site,
                    r.detail,
                    f"{r.weight_absmax_before:.3g} → {r.weight_absmax_after:.3g}",
                )
            console.print(fired)
        if self.refusals:
            ref = Table(title="not merged (and why)", show_header=True)
            for col in ("rule", "site", "reason"):
                ref.add_column(col)
            for o in self.refusals:
                ref.add_row(o.rule, o.site, o.reason)
            console.print(ref)
        if self.unfolded_norms:
            norms = Table(title="norms left unfolded", show_header=True)
            norms.add_column("norm")
            norms.add_column("reason")
            for site, reason in self.unfolded_norms:
                norms.add_row(site, reason)
            console.print(norms)
        for path, reason in self.skipped_scopes:
            console.print(f"skipped {path or '<model>'}: {reason}")
        for rule, site, err in self.rolled_back:
            console.print(f"rolled back {rule} at {site}: relative error {err:.2e}")
        for note in self.notes:
            console.print(f"note: {note}")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.render()

"""``explain(model)``: every candidate site, which rule fired there, or why each rule refused.

It also lists *near-misses*: sites where a rule's pattern got past its anchor (a batch norm
was found, say) but a later step failed, with that step's reason ("batch_norm 'bn' found, but
its input is ReLU 'act', not a Conv1d|Conv2d|Conv3d").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from reparam.progress import ProgressCallback
from reparam.report import DeployReport, NetworkOrder
from reparam.rules.base import SiteOutcome
from reparam.rules.registry import RuleRegistry


@dataclass
class Explanation:
    sites: list[SiteOutcome] = field(default_factory=list)
    skipped_scopes: list[tuple[str, str]] = field(default_factory=list)
    report: DeployReport | None = None
    near_misses: list[SiteOutcome] = field(default_factory=list)

    def fired(self) -> list[SiteOutcome]:
        return [s for s in self.sites if s.fired]

    def refused(self) -> list[SiteOutcome]:
        return [s for s in self.sites if not s.fired]

    def why_not(self, site_substring: str) -> list[SiteOutcome]:
        """Refusals at sites whose name contains ``site_substring``."""
        return [s for s in self.refused() if site_substring in s.site]

    def near(self, site_substring: str = "") -> list[SiteOutcome]:
        """Near-misses at sites whose name contains ``site_substring``."""
        return [s for s in self.near_misses if site_substring in s.site]

    def render(self) -> str:
        lines = []
        for s in self.sites:
            mark = "fired  " if s.fired else "refused"
            tail = f": {s.reason}" if s.reason else ""
            lines.append(f"{mark} {s.rule:<20} {s.site}{tail}")
        for s in self.near_misses:
            lines.append(f"near   {s.rule:<20} {s.site}: {s.reason}")
        for path, reason in self.skipped_scopes:
            lines.append(f"skipped {path or '<model>'}: {reason}")
        return "\n".join(lines) if lines else "no candidate sites"

    def __str__(self) -> str:
        return self.render()


def explain(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    rules: RuleRegistry | Iterable[str] | None = None,
    allow_slower: bool = False,
    progress: bool | ProgressCallback = False,
) -> Explanation:
    """Say, for every candidate site, which rule fired or why it refused, in network order.
    ``model`` is not changed (the analysis runs deploy on a copy); ``progress`` as in
    :func:`reparam.deploy`."""
    from reparam.deploy import deploy_with_report

    result = deploy_with_report(
        model,
        example_inputs,
        rules=rules,
        allow_slower=allow_slower,
        check=False,
        progress=progress,
    )
    report = result.report
    sites = [SiteOutcome(r.rule, r.site, True, r.detail) for r in report.rewrites]
    sites += report.refusals
    order = NetworkOrder.of(model)
    sites.sort(key=lambda s: order.key(s.site))
    near = sorted(report.open_near_misses(), key=lambda s: order.key(s.site))
    return Explanation(sites, list(report.skipped_scopes), report, near)

"""What deploy did: rules fired per site, refusals with reasons, params/FLOPs, weight ranges.

Everything is listed in network order (the order of the model's modules). ``str(report)`` is a
compact summary; ``report.render(full=True)`` adds every site (see :mod:`reparam.report_text`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from reparam.cost import count_macs
from reparam.rules.base import Rewrite, SiteOutcome

NO_NEIGHBOUR = "no conv or linear next to it to fold into"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: tuple[Any, ...]) -> int | None:
    """FLOPs of one forward (None without inputs): ``2 ×`` the multiply-adds of
    :mod:`reparam.cost`, the model every rule's cost decision uses — equal to
    ``torch.utils.flop_counter`` on convs and matmuls, with average pools counted too."""
    if not inputs:
        return None
    return 2 * count_macs(model, inputs)


# --------------------------------------------------------------------------------------------
# per-layer weight ranges


@dataclass
class WeightRange:
    """Largest |w| of one layer's weight before and after deploy (None: the layer did not
    exist then — merged away, or new)."""

    layer: str
    before: float | None
    after: float | None

    @property
    def growth(self) -> float | None:
        """after / before, the factor an int8 scale of this layer grows by."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before


def layer_absmax(model: nn.Module) -> dict[str, float]:
    """``{layer: max |w|}`` for every weight of two or more dimensions (conv and linear
    kernels, ...); a ``weight`` is named by its module's path, other parameters by their own."""
    ranges: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.dim() < 2 or not p.numel():
            continue
        layer = name.removesuffix(".weight") if name.endswith(".weight") else name
        ranges[layer] = float(p.detach().abs().max())
    return ranges


def weight_ranges(before: Mapping[str, float], after: Mapping[str, float]) -> list[WeightRange]:
    """Every layer of either model, with its range before and after."""
    return [
        WeightRange(name, before.get(name), after.get(name))
        for name in dict.fromkeys([*before, *after])
    ]


# --------------------------------------------------------------------------------------------
# network order


class NetworkOrder:
    """Sort key for module paths and sites (``path`` or ``scope:node``) by where they sit in the
    model: the order of ``named_modules()``; a ``scope:node`` site comes after its scope's
    submodules (the node combines what they computed), a path the model no longer has goes
    where its closest existing ancestor is."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.index: dict[str, int] = {}
        self.last: dict[str, int] = {}  # path -> index of its last descendant
        for i, path in enumerate(paths):
            self.index.setdefault(path, i)
            parts = path.split(".") if path else []
            for depth in range(len(parts) + 1):
                self.last[".".join(parts[:depth])] = i

    @classmethod
    def of(cls, model: nn.Module) -> NetworkOrder:
        return cls(p for p, _ in model.named_modules(remove_duplicate=False))

    def _position(self, path: str) -> int:
        while path not in self.index and path:
            path = path.rpartition(".")[0]
        return self.index.get(path, 0)

    def key(self, site: str) -> tuple[float, int]:
        path, sep, _ = site.partition(":")
        if sep:
            return (self.last.get(path, self._position(path)) + 0.5, 0)
        return (float(self._position(path)), path.count("."))


# --------------------------------------------------------------------------------------------
# norms inside scopes that do not trace


def skipped_scope_reason(norm: str, skipped: Iterable[tuple[str, str]]) -> str | None:
    """Why ``norm`` was never analysed, when it sits inside a scope whose forward does not
    trace (the innermost such scope), with how to fix it; None otherwise."""
    holders = [(p, r) for p, r in skipped if not p or norm == p or norm.startswith(p + ".")]
    if not holders:
        return None
    scope, cause = max(holders, key=lambda pr: len(pr[0]) + (1 if pr[0] else 0))
    return (
        f"not analysed: '{scope or '<model>'}', which holds it, does not trace ({cause}); "
        "fix: make that forward traceable by torch.fx (no Python branching on tensor values, "
        "no unpacking of traced sizes; torch.fx.wrap for helper functions), or put the norm "
        "and its conv in a submodule whose forward traces (submodules of a skipped scope are "
        "still deployed)"
    )


# --------------------------------------------------------------------------------------------


@dataclass
class DeployReport:
    rewrites: list[Rewrite] = field(default_factory=list)
    refusals: list[SiteOutcome] = field(default_factory=list)
    skipped_scopes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rolled_back: list[tuple[str, str, float]] = field(default_factory=list)
    unfolded_norms: list[tuple[str, str]] = field(default_factory=list)
    weight_ranges: list[WeightRange] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None
    flops_after: int | None = None
    weight_absmax_before: float = 0.0
    weight_absmax_after: float = 0.0
    max_relative_error: float | None = None
    checked_scopes: int = 0  # rewritten modules checked in float64 on their own inputs
    region_checks: int = 0  # of those, checked in the part their rewrites changed only
    seconds: float = 0.0
    # sites where a rule's pattern got past its anchor and failed a later step, with that
    # step's reason (sites where the rule fired or refused are not near-misses)
    near_misses: list[SiteOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._near_index: dict[tuple[str, str], int] = {}

    def note_near_miss(self, outcome: SiteOutcome) -> None:
        """Record (or update) the near-miss of ``outcome.rule`` at ``outcome.site``."""
        key = (outcome.rule, outcome.site)
        at = self._near_index.get(key)
        if at is None:
            self._near_index[key] = len(self.near_misses)
            self.near_misses.append(outcome)
        else:
            self.near_misses[at] = outcome

    def open_near_misses(self) -> list[SiteOutcome]:
        """The near-misses at sites where no rule fired or refused (those say more)."""
        decided = {r.site for r in self.rewrites} | {o.site for o in self.refusals}
        return [o for o in self.near_misses if o.site not in decided]

    def fired(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rewrites:
            counts[r.rule] = counts.get(r.rule, 0) + 1
        return counts

    def put_in_network_order(self, order: NetworkOrder) -> None:
        """Sort every list by where its site sits in the model (stable within a site)."""
        self.rewrites.sort(key=lambda r: order.key(r.site))
        self.refusals.sort(key=lambda o: order.key(o.site))
        self.near_misses.sort(key=lambda o: order.key(o.site))
        self._near_index = {(o.rule, o.site): i for i, o in enumerate(self.near_misses)}
        self.skipped_scopes.sort(key=lambda s: order.key(s[0]))
        self.rolled_back.sort(key=lambda s: order.key(s[1]))
        self.unfolded_norms.sort(key=lambda s: order.key(s[0]))
        self.weight_ranges.sort(key=lambda w: order.key(w.layer))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fired"] = self.fired()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def render(
        self, width: int | None = None, *, full: bool = False, weight_ranges: bool = False
    ) -> str:
        """The report as text tables: a compact summary (per rule: fired, refused and the top
        reasons; norms left with their reasons), every site with ``full=True``, the per-layer
        weight ranges with ``weight_ranges=True``. ``width`` defaults to ``$COLUMNS``, else
        the terminal's, else 100."""
        from reparam.report_text import render

        return render(self, width, full=full, weight_ranges=weight_ranges)

    def __str__(self) -> str:
        return self.render()

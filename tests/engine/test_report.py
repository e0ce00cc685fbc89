"""The deploy report: network order, compact and full views, widths, per-layer weight ranges,
and the cause given for norms inside a scope whose forward does not trace."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

import reparam
from reparam.demo import RepVGGStyleBlock, randomize_batch_norms
from reparam.report import NO_NEIGHBOUR, NetworkOrder


class TwoUsers(nn.Module):
    """conv → norm, and the conv's output used again: the norm cannot be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


class Gate(nn.Module):
    """conv → norm in a forward that torch.fx cannot trace (data-dependent branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = -y
        return self.norm(y)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = RepVGGStyleBlock(4)
        self.gate = Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.block(x))


@pytest.fixture(scope="module")
def mixed():
    """Two RepVGG blocks around two blocks whose norm cannot fold: fired and refused sites."""
    torch.manual_seed(0)
    model = randomize_batch_norms(
        nn.Sequential(RepVGGStyleBlock(4), TwoUsers(), TwoUsers(), RepVGGStyleBlock(4))
    ).eval()
    x = torch.randn(1, 4, 6, 6)
    return model, x, reparam.deploy_with_report(model, x)


def _block(site: str) -> int:
    return int(site.split(".")[0].split(":")[0])


def test_everything_is_in_network_order(mixed):
    model, _, result = mixed
    report = result.report
    fired = [r.site for r in report.rewrites]
    assert [_block(s) for s in fired] == sorted(_block(s) for s in fired)
    assert {_block(s) for s in fired} == {0, 3}
    # inside a block, the merge of the branches comes after the norms folded into them
    assert fired.index("0:add_1") > fired.index("0.dense.1")
    refused = [o.site for o in report.refusals]
    assert [_block(s) for s in refused] == sorted(_block(s) for s in refused)
    assert [p for p, _ in report.unfolded_norms] == ["1.norm", "2.norm"]
    layers = [w.layer for w in report.weight_ranges]
    order = NetworkOrder.of(model)
    assert layers == sorted(layers, key=order.key)


def test_compact_report_counts_per_rule_and_groups_reasons(mixed):
    report = mixed[2].report
    compact = report.render(width=120)
    assert str(report) == report.render()
    assert "rules fired and refused, per rule" in compact
    row = next(line for line in compact.splitlines() if "│ conv_norm" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[2:4] == [str(report.fired()["conv_norm"]), "2"]
    assert "2× like: output of conv" in row  # the two refusals grouped, numbers aside
    assert "norms left unfolded: 2" in compact
    assert "0.dense.1" not in compact  # sites are in the full view only
    full = report.render(width=120, full=True)
    for site in [r.site for r in report.rewrites] + [o.site for o in report.refusals]:
        assert site in full
    assert len(compact.splitlines()) < len(full.splitlines())


def test_columns_is_honoured_and_site_names_are_never_cut(monkeypatch):
    long_a = "a_rather_long_module_name_for_the_key_column"
    long_b = "stage_two"
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    model = randomize_batch_norms(
        nn.Sequential(OrderedDict([(long_a, nn.Sequential(OrderedDict([(long_b, inner)])))]))
    ).eval()
    report = reparam.deploy_with_report(model, torch.randn(1, 3, 5, 5)).report
    site = f"{long_a}.{long_b}.1"
    assert [r.site for r in report.rewrites] == [site]
    monkeypatch.setenv("COLUMNS", "80")
    for text in (str(report), report.render(full=True, weight_ranges=True)):
        assert max(len(line) for line in text.splitlines()) <= 80
    assert site in report.render(full=True).replace("│", " ").split()
    monkeypatch.setenv("COLUMNS", "150")
    assert max(len(line) for line in report.render(full=True).splitlines()) > 80


def test_weight_ranges_per_layer(mixed):
    model, _, result = mixed
    report = result.report
    ranges = {w.layer: w for w in report.weight_ranges}
    before = {n.removesuffix(".weight"): p for n, p in model.named_parameters() if p.dim() > 1}
    after = {
        n.removesuffix(".weight"): p for n, p in result.model.named_parameters() if p.dim() > 1
    }
    assert set(ranges) == set(before) | set(after)
    for layer, w in ranges.items():
        assert w.before == (float(before[layer].detach().abs().max()) if layer in before else None)
        assert w.after == (float(after[layer].detach().abs().max()) if layer in after else None)
    assert ranges["0.pointwise.0"].after is None  # merged into 0.dense.0
    assert ranges["0.dense.0"].growth == pytest.approx(
        ranges["0.dense.0"].after / ranges["0.dense.0"].before
    )
    assert max(w.after for w in ranges.values() if w.after is not None) == pytest.approx(
        report.weight_absmax_after
    )
    doc = json.loads(report.to_json())
    assert {d["layer"] for d in doc["weight_ranges"]} == set(ranges)
    shown = report.render(width=120, weight_ranges=True)
    assert "largest |weight| per layer" in shown and "merged away" in shown
    assert "largest |weight| per layer" not in report.render(width=120)


def test_norm_in_a_scope_that_does_not_trace_gets_the_real_cause():
    x = torch.randn(2, 4, 6, 6)
    model = randomize_batch_norms(Outer()).eval()
    report = reparam.deploy_with_report(model, x).report
    assert report.fired()["parallel_branches"] == 1  # the traceable block still merges
    reasons = dict(report.unfolded_norms)
    assert set(reasons) == {"gate.norm"}
    reason = reasons["gate.norm"]
    assert NO_NEIGHBOUR not in reason
    assert "'gate'" in reason and "does not trace" in reason and "control flow" in reason
    assert "fix:" in reason and "submodule" in reason
    assert any(path == "gate" for path, _ in report.skipped_scopes)


def test_explain_lists_sites_in_network_order(mixed):
    model, x, _ = mixed
    sites = [s.site for s in reparam.explain(model, x).sites]
    assert [_block(s) for s in sites] == sorted(_block(s) for s in sites)
    assert {_block(s) for s in sites} == {0, 1, 2, 3}


def test_top_reasons_group_by_cause_not_by_names_or_numbers():
    from reparam.report_text import top_reasons

    reasons = [
        "output of 'a.conv1' is used elsewhere",
        "output of 'b.pre_block.conv' is used elsewhere",
        "merged conv costs 9 MACs vs 4",
        "merged conv costs 25 MACs vs 4",
        "merged conv costs 9 MACs vs 4",
        "the first conv strides",
    ]
    assert top_reasons(reasons, n=2) == [
        (3, "merged conv costs 9 MACs vs 4", False),
        (2, "output of 'a.conv1' is used elsewhere", False),
    ]
    assert top_reasons(["same", "same"]) == [(2, "same", True)]

"""Helpers for the trust tests: every case is exact on several inputs or refused."""

from __future__ import annotations

import copy
import operator

import torch
from torch import nn
from torch.fx import Node

import reparam
from reparam.testing import randomize_norms


def prepared(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_norms(model, torch.Generator().manual_seed(seed)).double().eval()


def deploy_report(model: nn.Module, x) -> reparam.DeployResult:
    return reparam.deploy_with_report(model, x)


def outputs_agree(original: nn.Module, deployed: nn.Module, *inputs_list) -> None:
    """Same output on every given input tuple (float64, 1e-9 relative)."""
    for inputs in inputs_list:
        if not isinstance(inputs, tuple):
            inputs = (inputs,)
        with torch.no_grad():
            a = original(*copy.deepcopy(inputs))
            b = deployed(*copy.deepcopy(inputs))
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def skipped(report, path: str) -> str:
    for p, reason in report.skipped_scopes:
        if p == path:
            return reason
    return ""


def double_negation(node: Node) -> Node | None:
    """``node`` when it is ``-(-x)`` (the site the region-check tests' rules rewrite)."""
    inner = node.args[0] if node.args else None
    if node.target is operator.neg and isinstance(inner, Node) and inner.target is operator.neg:
        return node
    return None

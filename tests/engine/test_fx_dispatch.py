"""The deploy-wide fx patches (reparam.graph.fx_dispatch): traces see what a plain fx trace
sees, math functions and ``torch.fx.wrap`` functions on traced values stay calls, and
everything is put back afterwards."""

from __future__ import annotations

import math
from math import sqrt

import torch
import torch.fx as fx
from torch import nn
from torch.fx import _symbolic_trace as st

import reparam
from reparam.graph.fx_dispatch import shared_module_hooks


@torch.fx.wrap
def flip_if_negative(x: torch.Tensor) -> torch.Tensor:
    """Data-dependent: fx keeps it as one call (``torch.fx.wrap``)."""
    return -x if x.sum() < 0 else x


torch.fx.wrap("len")  # a builtin registered by name: fx patches it into this module's globals


class Scaled(nn.Module):
    """conv → BN, then scaled by a math function of a learned scalar (a traced value, as in
    CLIP's ``logit_scale.exp()`` written with ``math``), or passed through a wrapped function."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.log_scale = nn.Parameter(torch.tensor(0.7))
        self.style = style

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.style == "module":
            return y * math.exp(self.log_scale)
        if self.style == "imported":
            return y * sqrt(self.log_scale)
        if self.style == "builtin":
            return y * len(x)
        return flip_if_negative(y)


def _trained(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model.eval()


def test_math_and_wrapped_functions_of_traced_values_stay_calls() -> None:
    torch.manual_seed(0)
    for style in ("module", "imported", "wrapped"):
        model = _trained(Scaled(style))
        result = reparam.deploy_with_report(model, torch.rand(2, 3, 8, 8) + 5)
        assert [r.rule for r in result.report.rewrites] == ["conv_norm"], style
        # other sizes and signs: a branch taken once, at the example input, would differ here
        for x in (torch.randn(1, 3, 5, 12), -torch.rand(3, 3, 6, 6) - 5, torch.randn(2, 3, 8, 8)):
            torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_math_call_on_a_traced_value_is_a_node_of_the_capture() -> None:
    from reparam.graph.capture import capture

    with shared_module_hooks():
        for style, fn in (("module", math.exp), ("imported", sqrt)):
            graph = capture(Scaled(style).eval()).graph
            assert any(n.op == "call_function" and n.target is fn for n in graph.nodes), style
        graph = capture(Scaled("wrapped").eval()).graph
        assert any(n.target is flip_if_negative for n in graph.nodes)


def _patchable() -> tuple:
    """What fx patches, and what the block replaces, as it is now."""
    return (
        nn.Module.__dict__["__call__"],
        nn.Module.__dict__["__getattr__"],
        math.sqrt,
        math.floor,
        st._autowrap_check,
        st._create_wrapped_func,
        globals()["flip_if_negative"],
    )


def test_the_block_puts_everything_back() -> None:
    before = _patchable()
    with shared_module_hooks():
        # outside a trace, everything else sees the functions themselves (a function looked
        # up now, by an import or a pickle, must be the module-level one)
        assert math.sqrt is before[2] and math.floor is before[3]
        assert globals()["flip_if_negative"] is before[6]
    assert all(a is b for a, b in zip(before, _patchable(), strict=True))


def test_a_plain_fx_trace_inside_the_block_is_a_plain_fx_trace() -> None:
    describe = lambda g: [(n.op, str(n.target)) for n in g.graph.nodes]  # noqa: E731
    for style, name in (("module", "exp"), ("imported", "sqrt"), ("builtin", "len")):
        model = Scaled(style)
        outside = fx.symbolic_trace(model)
        with shared_module_hooks():
            inside = fx.symbolic_trace(model)
        assert describe(inside) == describe(outside)
        assert ("call_function", f"<built-in function {name}>") in describe(inside)

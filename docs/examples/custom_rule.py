"""Tutorial: write, test and register your own merge rule.

The rule folds a constant factor into the conv in front of it: ``conv(x) * 0.2``
becomes a conv with its weight and bias scaled by 0.2 (residual scaling in
ESRGAN-style blocks is written exactly like this). The built-in rules only see
per-channel *tensors*; a Python number is the new case.

Run it with ``python docs/examples/custom_rule.py``.
"""

# --8<-- [start:model]
import torch
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms


class ScaledResidual(nn.Module):
    """x + 0.2 * BN(conv(x)): residual scaling as in ESRGAN's dense blocks."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.bn(self.conv(x))


torch.manual_seed(0)
model = randomize_batch_norms(ScaledResidual(8)).eval()
x = torch.randn(1, 8, 16, 16)

print(reparam.deploy_with_report(model, x).report.fired())  # built-ins alone
# --8<-- [end:model]


# --8<-- [start:rule]
import copy
import math
import operator

from reparam import PatternRule, Refusal, Rewrite, RuleContext, RuleRegistry
from reparam.patterns import CONV, AnyOf, Bindings, Call, Constant

_MUL = (operator.mul, torch.mul)
_DIV = (operator.truediv, torch.div)
conv = CONV.bind("conv")  # a Conv1d/2d/3d call, captured as "conv"
factor = Constant((int, float)).bind("factor")  # a Python number


class FoldConstantScale(PatternRule):
    """``conv(x) * c`` (or ``c * conv(x)``, ``conv(x) / c``) as one conv."""

    name = "constant_scale"
    summary = "a conv whose output is multiplied or divided by a Python number"
    pattern = "conv(x) * c,  c * conv(x),  conv(x) / c"
    refuses_when = (
        "the conv's output is also used elsewhere",
        "the conv module is shared or called more than once",
        "the factor is not finite (or the divisor is zero)",
    )
    # the pattern reads like the computation: three spellings of one thing
    graph_pattern = AnyOf(
        Call(_MUL, conv, factor),
        Call(_MUL, factor, conv),
        Call(_DIV, conv, factor).bind("divide"),
    ).bind("scale")

    def check(self, m: Bindings, ctx: RuleContext):
        """Exactness conditions, and the new conv; a Refusal says why not."""
        conv_node, c = m["conv"], float(m["factor"])
        if "divide" in m:
            if c == 0:
                return Refusal("division by zero")
            c = 1.0 / c
        if not math.isfinite(c):
            return Refusal(f"the factor {c} is not finite")
        if len(conv_node.users) != 1:
            return Refusal(
                f"output of conv '{ctx.qualified(conv_node.target)}' "
                "is also used elsewhere"
            )
        # shared module, called twice, shared parameter
        reason = ctx.exclusive_reason(conv_node)
        if reason:
            return Refusal(reason)
        scaled = copy.deepcopy(m.module("conv"))
        with torch.no_grad():
            scaled.weight.mul_(c)
            if scaled.bias is not None:
                scaled.bias.mul_(c)
        return m["scale"], conv_node, scaled, c

    def rewrite(self, plan, ctx: RuleContext) -> Rewrite:
        """The graph surgery, only through the transaction ``ctx.tx``
        (deploy can roll it back)."""
        node, conv_node, scaled, c = plan
        site = ctx.site_name(node)
        before = float(ctx.module(conv_node.target).weight.detach().abs().max())
        # same path: state_dict keys do not move
        ctx.tx.place(conv_node.target, scaled)
        # users of `conv(x) * c` now read the new conv
        ctx.tx.redirect(node, conv_node)
        ctx.tx.erase_unused([node])
        return Rewrite(
            rule=self.name,
            site=site,
            detail=f"folded the factor {c:g} into the conv",
            weight_absmax_before=before,
            weight_absmax_after=float(scaled.weight.detach().abs().max()),
        )


# --8<-- [end:rule]

# --8<-- [start:private]
registry = RuleRegistry([*reparam.default_registry(), FoldConstantScale()])
result = reparam.deploy_with_report(model, x, rules=registry)
print(result.report.fired())
for r in result.report.rewrites:
    print(f"{r.rule:<18} {r.site:<12} {r.detail}")
print(result.model)
reparam.assert_equivalent(model, result.model, x)
# --8<-- [end:private]


# --8<-- [start:refusal]
class SharedOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([y * 0.5, y], dim=1)  # y is needed unscaled too


explanation = reparam.explain(
    SharedOutput().eval(), x, rules=[FoldConstantScale()]
)
for outcome in explanation.refused():
    print(f"{outcome.rule} refused at {outcome.site}: {outcome.reason}")


class TensorScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale  # a tensor, not a Python number


near = reparam.explain(TensorScale().eval(), x, rules=[FoldConstantScale()])
for outcome in near.near_misses:
    print(f"{outcome.rule} near {outcome.site}: {outcome.reason}")
# --8<-- [end:refusal]

# --8<-- [start:global]
reparam.register_rule(FoldConstantScale, before="parallel_branches")
try:
    print([rule.name for rule in reparam.list_rules()])
    # the default registry now includes the new rule
    deployed = reparam.deploy(model, x)
    reparam.assert_equivalent(model, deployed, x)
finally:
    # leave the process as we found it
    reparam.unregister_rule("constant_scale")
# --8<-- [end:global]


# --8<-- [start:test]
class Probe(nn.Module):
    """conv(x) / factor, random kernel size, reflect-padded border."""

    def __init__(self, factor: float, k: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(4, 6, k, padding=k // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) / self.factor


# A property test in a few lines: random factors and kernels, exact in float64.
gen = torch.Generator().manual_seed(0)
for _ in range(5):
    factor = float(torch.empty(1).uniform_(0.1, 3, generator=gen))
    k = 2 * int(torch.randint(0, 3, (1,), generator=gen)) + 1
    probe = Probe(factor, k).double().eval()
    xp = torch.randn(2, 4, 9, 9, dtype=torch.float64, generator=gen)
    result = reparam.deploy_with_report(
        probe, xp, rules=[FoldConstantScale()], verify=True
    )
    assert result.report.fired() == {"constant_scale": 1}, (
        result.report.refusals
    )
    reparam.assert_equivalent(probe, result.model, xp)
print("5 random cases: exact")
# --8<-- [end:test]

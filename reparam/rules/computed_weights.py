r"""A functional conv / linear whose weight is computed from parameters → a plain layer.

.. math:: \operatorname{conv}(x,\; f(\theta),\; g(\theta)) = \operatorname{Conv}_{W, b}(x),
          \qquad W = f(\theta),\; b = g(\theta)

When the weight (and bias) expression of ``F.conv1d/2d/3d(x, weight_fn(), ...)`` or
``F.linear(x, W(), b())`` depends only on the model's parameters, buffers and constants, it
is the same tensor on every call of an inference model: evaluate it once and call a plain
``nn.ConvNd`` / ``nn.Linear`` holding it, which the other rules can then merge. This is how
OREPA (arXiv:2211.01842) builds its kernels from several parameter tensors, ECBSR
(Zhang et al., ACM MM 2021) its Sobel / Laplacian branches (``scale * mask``), and DBB's
identity-initialised 1×1 (arXiv:2103.13425) adds an identity buffer to its weight. The
training-time weight arithmetic leaves the deployed forward.

Exact always: the value is computed by the same expression, in the model's dtype. Refused
when the weight or bias depends on the input, when stride / padding / dilation / groups are
computed in forward (not Python constants), or when the evaluated weight does not fit the
call (rank, channel counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.patterns import Bindings, Call
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax

_CONVS = {
    F.conv1d: 1,
    F.conv2d: 2,
    F.conv3d: 3,
    torch.conv1d: 1,
    torch.conv2d: 2,
    torch.conv3d: 3,
}
_LINEARS = (F.linear, torch._C._nn.linear)
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARGS = ("input", "weight", "bias")


@dataclass
class _Plan:
    node: Node
    source: Node
    module: nn.Module
    detail: str


def _bind(node: Node, names: tuple[str, ...]) -> dict[str, object]:
    bound = dict(zip(names, node.args, strict=False))
    bound.update(node.kwargs)
    return bound


def _on_a_tensor(node: Node) -> bool:
    """a call on a tensor computed in the graph"""
    return isinstance(node.args[0] if node.args else node.kwargs.get("input"), Node)


def _is_geometry(value: object) -> bool:
    if isinstance(value, str):
        return value in ("same", "valid")
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


class ComputedWeightsAsLayer(PatternRule):
    """Replaces F.convNd / F.linear on a parameter-only weight expression with a layer."""

    name = "computed_weights"
    summary = (
        "F.conv1d/2d/3d or F.linear whose weight/bias are computed from parameters in forward "
        "(OREPA, ECBSR, DBB's identity 1×1) → a plain Conv/Linear"
    )
    pattern = "F.convNd(x, f(params), g(params), ...) | F.linear(x, f(params), g(params))"
    refuses_when = (
        "the weight or bias depends on the input",
        "stride / padding / dilation / groups are computed in forward",
        "the evaluated weight does not fit the call (rank, channels, dtype)",
    )
    graph_pattern = Call((*_CONVS, *_LINEARS), where=_on_a_tensor, label="F.convNd|F.linear")
    graph_pattern = graph_pattern.bind("call")

    def check(self, m: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        node = m["call"]
        is_conv = node.target in _CONVS
        bound = _bind(node, _CONV_ARGS if is_conv else _LINEAR_ARGS)
        weight = ctx.constant_value(bound.get("weight"))
        if weight is None or isinstance(bound.get("weight"), (int, float)):
            return Refusal("the weight depends on the input (not only on parameters)")
        bias_arg = bound.get("bias")
        bias = None
        if bias_arg is not None:
            bias = ctx.constant_value(bias_arg)
            if bias is None or isinstance(bias_arg, (int, float)):
                return Refusal("the bias depends on the input (not only on parameters)")
        if not weight.dtype.is_floating_point:
            return Refusal("the weight is not floating point")
        tied = _tied_reason(bound.get("weight"), ctx)
        if tied:
            return Refusal(tied)
        if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
            return Refusal("the bias does not have one entry per output channel")
        source = bound["input"]
        if is_conv:
            module = _conv(node, bound, weight, bias)
        else:
            module = _linear(weight, bias)
        if isinstance(module, Refusal):
            return module
        kind = "conv" if is_conv else "linear"
        return _Plan(node, source, module, f"computed {kind} weight evaluated once")

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        site = ctx.site_name(plan.node)
        stem = "reparam_conv" if not isinstance(plan.module, nn.Linear) else "reparam_linear"
        tx = ctx.tx
        path = tx.place(tx.fresh_path(ctx.owner_path(plan.node), stem), plan.module)
        tx.redirect(plan.node, tx.insert_call(path, (plan.source,), before=plan.node))
        tx.erase_unused([plan.node])
        weight = plan.module.weight
        return Rewrite(self.name, site, plan.detail, 0, 0, absmax(weight), absmax(weight))


def _tied_reason(arg: object, ctx: RuleContext) -> str | None:
    """A bare parameter that something else also reads (a tied LM head) stays shared: a
    layer holding a copy would double it and compute nothing faster."""
    if not (isinstance(arg, Node) and arg.op == "get_attr"):
        return None
    value = ctx.constant_value(arg)
    others = [
        n for n in ctx.graph.nodes if n.op == "get_attr" and n is not arg and n.target == arg.target
    ]
    if others or len(arg.users) > 1:
        return f"weight '{ctx.qualified(str(arg.target))}' is also read elsewhere (tied)"
    from reparam.graph.views import resolve_attr

    obj = resolve_attr(ctx.root, str(arg.target))
    if id(obj) in ctx.shared_modules or value is None:
        return f"weight '{ctx.qualified(str(arg.target))}' is shared with another module"
    return None


def _conv(
    node: Node, bound: dict[str, object], weight: torch.Tensor, bias: torch.Tensor | None
) -> nn.Module | Refusal:
    dims = _CONVS[node.target]
    if weight.dim() != dims + 2:
        return Refusal(f"a {dims}-D conv with a weight of rank {weight.dim()}")
    geometry = {
        "stride": bound.get("stride", 1),
        "padding": bound.get("padding", 0),
        "dilation": bound.get("dilation", 1),
        "groups": bound.get("groups", 1),
    }
    for key, value in geometry.items():
        if not _is_geometry(value) or (key == "groups" and not isinstance(value, int)):
            return Refusal(f"the conv's {key} is computed in forward, not a constant")
    groups = geometry["groups"]
    if groups < 1 or weight.shape[0] % groups:
        return Refusal("output channels do not divide into the groups")
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    try:
        conv = cls(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=geometry["stride"],
            padding=geometry["padding"],
            dilation=geometry["dilation"],
            groups=groups,
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        return Refusal(f"no ConvNd computes this call: {err}")
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | Refusal:
    if weight.dim() != 2:
        return Refusal(f"F.linear with a weight of rank {weight.dim()}")
    linear = nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear

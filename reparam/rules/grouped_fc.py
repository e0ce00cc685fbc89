r"""A grouped FC written as a grouped 1×1 conv on 1×1 maps, computed as a batched matmul.

RepMLP's FC (``fc3``; RepMLP, arXiv:2105.01883, Sec. 3; RepMLPNet, arXiv:2112.11081, Sec. 3) is a
``Conv2d(I, O, 1, groups=g)`` applied to partitions reshaped to ``(N, I, 1, 1)`` (``g = 1`` for
RepMLPNet's first stage, one share set). On such an input (stride 1, no padding, no dilation)
the conv is ``g`` independent matrix products: with
``I' = I/g``, ``O' = O/g``, ``X_j = x[:, j I' : (j+1) I']`` (``N × I'``) and
``W_j = W[j O' : (j+1) O', :, 0, 0]`` (``O' × I'``),

.. math:: y[:, j O' : (j+1) O'] = X_j W_j^\top + b_j,\qquad j = 0 \dots g-1,

which is one batched matmul over the group dimension,

.. math:: Y = \operatorname{baddbmm}\big(b.\mathrm{view}(g, 1, O'),\;
          x.\mathrm{view}(N, g, I').\mathrm{transpose}(0, 1),\;
          W.\mathrm{view}(g, O', I').\mathrm{transpose}(1, 2)\big)

(``(g, N, O')``, transposed back to ``(N, O, 1, 1)``). The same products and the same sums:
only the order of the additions inside a dot product may differ, i.e. the outputs agree up to
float rounding, in any dtype. Nothing is merged and no weight changes: the conv is replaced at
its path by a :class:`GroupedPointwiseConv`, an ``nn.Conv2d`` with the *same* parameters
(``weight (O, I/g, 1, 1)``, ``bias``), so ``state_dict`` keys and shapes, ``isinstance`` and
checkpoints stay as they were; only its kernel differs. On any other input (maps larger than
1×1) it runs ``F.conv2d`` as before.

Why: CPU conv kernels handle a 1×1 conv on 1×1 maps poorly: grouped, it runs as a loop of
per-group convs (3–25× slower than a batched GEMM of the same numbers); dense with many rows
(RepMLPNet-B224's first-stage FC: 96 rows of 3136), about 3× slower than one GEMM. So a
deployed RepMLP, which is mostly such FCs, can be slower than its training form. The rule fires
only where the batched matmul is measured to be faster, by at least 10% (less is within timing
noise): at deploy time it times both kernels on the example input's shape, on the model's
device, dtype and thread count (a few interleaved repetitions within about 50 ms, median), and
refuses with the measured numbers otherwise. Identical geometries are timed once per process.
The decision holds for the example input's batch size (other batches still compute the same
function). FCs under 2^18 multiply-adds (squeeze-excitation gates, say) are no site at all.

``GroupedPointwiseConv`` keeps ``nn.Conv2d.forward`` and overrides only ``_conv_forward``, so
the engine's tracer keeps it as a leaf conv that every other rule still understands; plain
``torch.fx.symbolic_trace`` traces into it and records one call of the wrapped
:func:`grouped_pointwise_conv2d`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

from reparam import cost
from reparam.errors import Refusal
from reparam.matcher import note_visits
from reparam.patterns import AllOf, Bindings, Given, Module
from reparam.rules.base import PatternRule, Rewrite, RuleContext, absmax
from reparam.runtime import GroupedPointwiseConv, grouped_pointwise_conv2d
from reparam.timing import time_interleaved

__all__ = ["GroupedFcAsBmm", "GroupedPointwiseConv", "grouped_pointwise_conv2d"]


# -- timing --------------------------------------------------------------------------------------

Timer = Callable[[nn.Conv2d, tuple[int, ...]], tuple[float, float]]

_TIMINGS: dict[tuple, tuple[float, float]] = {}
_BUDGET_S = 0.05
_MAX_REPS = 5
_MIN_GAIN = 0.9  # fire when bmm time <= 0.9 x conv time
_MIN_MACS = 1 << 18  # below this any kernel takes microseconds: not worth timing or reporting


def measure(conv: nn.Conv2d, shape: tuple[int, ...]) -> tuple[float, float]:
    """Median seconds of ``(grouped conv, batched matmul)`` for ``conv`` on an input of
    ``shape``: interleaved repetitions (after one warm-up each) while they fit in about 50 ms.
    Cached per geometry, dtype, device and thread count."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    key = (
        tuple(weight.shape),
        conv.groups,
        bias is not None,
        tuple(shape),
        weight.dtype,
        str(weight.device),
        torch.get_num_threads(),
    )
    if key in _TIMINGS:
        return _TIMINGS[key]
    device, groups = weight.device, conv.groups
    x = torch.randn(shape, dtype=weight.dtype, device=device)

    def run_conv() -> Tensor:
        return F.conv2d(x, weight, bias, 1, 0, 1, groups)

    def run_bmm() -> Tensor:
        return grouped_pointwise_conv2d(x, weight, bias, groups)

    with torch.no_grad():
        conv_t, bmm_t = time_interleaved(
            [run_conv, run_bmm], runs=_MAX_REPS, warmup=1, device=device, budget_s=_BUDGET_S
        )
    result = (conv_t.median, bmm_t.median)
    _TIMINGS[key] = result
    return result


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


# -- the rule ------------------------------------------------------------------------------------


@dataclass
class _Plan:
    node: Node
    conv: nn.Conv2d
    shape: tuple[int, ...]
    conv_s: float
    bmm_s: float


def _is_grouped_pointwise(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d  # exactly: not a subclass with a kernel of its own (or ours)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.padding in ((0, 0), "valid")
    )


def _is_pointwise_input(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and tuple(shape[2:]) == (1, 1)


def _macs(conv: nn.Conv2d, shape: tuple[int, ...]) -> int:
    """The conv's multiply-adds on a (N, C, 1, 1) input (the bmm computes the same)."""
    return cost.conv_macs(conv.weight.shape, (shape[0], conv.out_channels, 1, 1))


def _users_of_module(node: Node, ctx: RuleContext) -> list[Node]:
    """The nodes that call or read the module ``node`` calls (what ``exclusive_reason``
    counts besides ``node``)."""
    target, prefix = str(node.target), f"{node.target}."
    return [
        n
        for n in ctx.graph.nodes
        if n.op in ("call_module", "get_attr")
        and (str(n.target) == target or str(n.target).startswith(prefix))
    ]


#: the bound input shape of a grouped conv whose input shape is unknown (check refuses it)
_UNKNOWN: tuple[int, ...] = ()


class GroupedFcAsBmm(PatternRule):
    """Replaces a (grouped) 1×1 conv on 1×1 maps with the same conv computed by ``baddbmm``."""

    name = "grouped_fc_as_bmm"
    summary = "1×1 conv on 1×1 maps (a grouped FC) → the same product as a batched matmul"
    pattern = "conv2d_1×1(x), any groups, x of shape (N, C, 1, 1)"
    refuses_when = (
        "shapes are unknown (pass example_inputs; a dense 1×1 conv then is no site at all)",
        "the input's maps are not 1×1, or the FC is tiny (< 262,144 multiply-adds: no site)",
        "the conv module is shared or called more than once",
        "the batched matmul is not at least 10% faster for this shape on this device, dtype "
        "and thread count (both are timed at deploy time)",
    )

    def __init__(self, timer: Timer | None = None, min_macs: int = _MIN_MACS) -> None:
        # ``timer(conv, input_shape) -> (conv seconds, bmm seconds)``; tests inject one.
        self.timer: Timer = timer or measure
        # smaller FCs (a squeeze-excitation gate, say) are no site: microseconds either way
        self.min_macs = min_macs
        # The input shape each conv was last seen with. A scope that is never called itself
        # (an nn.Sequential the model iterates over) is deployed without inputs; there the conv
        # is judged by the shape an inner scope saw, not refused for want of one.
        self._seen: weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]] = (
            weakref.WeakKeyDictionary()
        )
        # conv2d_1×1(x) with x of shape (N, C, 1, 1): the shape test reads min_macs and the
        # shapes seen, so the pattern is this instance's
        self.graph_pattern = AllOf(
            Module(_is_grouped_pointwise, label="1×1 conv").bind("conv"),
            Given(self._fc_input, "an FC's input (N, C, 1, 1)", quiet=True).bind("shape"),
        )

    def __getstate__(self) -> dict[str, object]:
        # the shapes seen are a deploy's passing knowledge (and a weak mapping pickles not)
        state = dict(self.__dict__)
        state["_seen"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._seen = weakref.WeakKeyDictionary()

    def _input_shape(self, node: Node, conv: nn.Module, ctx: RuleContext) -> tuple | None:
        shape = ctx.shape(node.args[0])
        if shape is None:
            return self._seen.get(conv)
        self._seen[conv] = tuple(shape)
        return tuple(shape)

    @staticmethod
    def clear_timings() -> None:
        """Forget the cached measurements (e.g. after changing the thread count's meaning)."""
        _TIMINGS.clear()

    def _fc_input(self, node: Node, b: Bindings, ctx: RuleContext) -> tuple[int, ...] | None:
        """The input shape of a conv called on one batch of 1×1 maps, large enough to time
        (``_UNKNOWN`` for a grouped conv of unknown input); None for any other call."""
        if len(node.args) != 1 or node.kwargs:
            return None
        conv = b.module("conv")
        shape = self._input_shape(node, conv, ctx)
        if shape is None:
            # a dense 1×1 conv of unknown input is most likely on real maps and too common
            # (every ResNet block) to refuse each; a grouped one is likely an FC: refused
            return None if conv.groups == 1 else _UNKNOWN
        if not _is_pointwise_input(shape):
            return None  # a 1×1 conv on real maps: not an FC, nothing to say
        if _macs(conv, shape) < self.min_macs:
            return None
        return shape

    def check(self, m: Bindings, ctx: RuleContext) -> _Plan | Refusal:
        node, conv, shape = m["conv"], m.module("conv"), m["shape"]
        if shape == _UNKNOWN:
            return Refusal("the input shape is unknown; pass example_inputs")
        reason = ctx.exclusive_reason(node)
        if reason is not None:
            # the reason reads other nodes (the module's other calls, direct reads of its
            # weights): the driver's memo of this refusal depends on them
            note_visits(_users_of_module(node, ctx))
            return Refusal(reason)
        if not conv.weight.is_floating_point() or conv.weight.device.type == "meta":
            return Refusal("the weights are not floating-point tensors with data")
        conv_s, bmm_s = self.timer(conv, shape)
        if not bmm_s <= _MIN_GAIN * conv_s:
            return Refusal(
                f"grouped conv {_fmt(conv_s)} vs bmm {_fmt(bmm_s)} for input {shape}: "
                "the batched matmul is not clearly faster here"
            )
        return _Plan(node, conv, shape, conv_s, bmm_s)

    def rewrite(self, plan: _Plan, ctx: RuleContext) -> Rewrite:
        conv = plan.conv
        ctx.set_module(plan.node.target, GroupedPointwiseConv.from_conv(conv))
        macs = _macs(conv, plan.shape)
        weight_absmax = absmax(conv.weight)
        return Rewrite(
            self.name,
            ctx.site_name(plan.node),
            f"grouped conv {_fmt(plan.conv_s)} → bmm {_fmt(plan.bmm_s)} "
            f"({plan.conv_s / plan.bmm_s:.1f}× faster) for input {plan.shape}",
            macs,
            macs,
            weight_absmax,
            weight_absmax,
            forward_changed=False,  # same path, same call: the scope's forward stays
        )

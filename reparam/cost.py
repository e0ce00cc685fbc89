r"""The one cost model: multiply-adds a layer really computes at the shapes it runs at.

Every rule's "would the merge be slower?" and deploy's closing whole-model check count with
the functions below, so the two cannot disagree (they did: per-output-position estimates that
assume large maps told a merge over a 1×1 map it was cheaper, the whole-model count then said
it was not). Counted, in multiply-adds (MACs):

* convolution: ``N · C_out · prod(out spatial) · (C_in / groups) · prod(kernel)`` — every output
  element times the taps of one group, padding taps included (a dense kernel computes them);
  transposed: every *input* element times ``C_out / groups · prod(kernel)``;
* linear / matmul (``mm``, ``addmm``, ``bmm``, ``baddbmm``): ``M · N · K`` per batch;
* average pools (fixed, adaptive, and ``mean`` over dims, which is how PyTorch computes a
  global pool): one per tap — the adds of the window (a tap of a pool costs one slot of the
  same multiply-add unit);
* any other op that ``torch.utils.flop_counter`` has a formula for (attention kernels):
  its FLOPs / 2.

Not counted: elementwise work (norms, activations, the adds that sum branches, a bias) and
max pools. No rule adds elementwise work — they only remove it (a folded norm, a merged add)
or leave it (a bias rides in the conv's epilogue) — so a merge that does not raise the count
above is never slower, and the count stays what the rules account for. ``FLOPs`` in the report
are ``2 ×`` this count, which equals ``FlopCounterMode`` on models of convs and matmuls.

The whole-model count is a ``TorchDispatchMode`` (:func:`count_macs`), not a walk of the traced
graph: it counts what really runs — functional calls, modules kept opaque because they do not
trace, code outside every rewritten scope — and it counts an op the same way whether a rule
wrote it or the user did, because the per-op formulas are the functions rules call. The rules
count the layers they remove and the layer they add on the example input's shapes
(``ctx.shape``); where no shape is known they fall back to :func:`per_output` estimates, which
count the first layer of a chain once per output position of the second (not ``prod(stride)``
times as on a large map) so that a merge fires only if it saves work even where borders eat
the stride's gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

Shape = Sequence[int]


class AtShapes(tuple):
    """The shapes one layer's output has at each call of its scope (a block run on a crop and
    on the full map): its multiply-adds are the sum over them, so a merge is judged on every
    call, as the whole-model count sees it."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# per-op formulas (rules and the whole-model count both call these)


def conv_macs(weight_shape: Shape, out_shape: Shape | AtShapes) -> int:
    """A ConvNd: every output element times ``(C_in / groups) · prod(kernel)``.

    ``weight_shape`` is ``(C_out, C_in / groups, *kernel)``; ``out_shape`` ``(N, C_out, *sp)``
    (or one per call, summed).
    """
    if isinstance(out_shape, AtShapes):
        return sum(conv_macs(weight_shape, shape) for shape in out_shape)
    return math.prod(out_shape) * math.prod(weight_shape[1:])


def conv_transpose_macs(weight_shape: Shape, in_shape: Shape) -> int:
    """A ConvTransposeNd (weight ``(C_in, C_out / groups, *kernel)``): every input element
    times ``(C_out / groups) · prod(kernel)``."""
    return math.prod(in_shape) * math.prod(weight_shape[1:])


def linear_macs(in_features: int, out_shape: Shape) -> int:
    """A Linear: every output element times ``in_features``."""
    return math.prod(out_shape) * in_features


def matmul_macs(a_shape: Shape, b_shape: Shape) -> int:
    """``(…, M, K) @ (…, K, N)``: ``batch · M · N · K``."""
    batch = math.prod(a_shape[:-2]) if len(a_shape) > 2 else 1
    return batch * a_shape[-2] * a_shape[-1] * b_shape[-1]


def pool_macs(kernel: Shape | int, out_shape: Shape, dims: int) -> int:
    """A fixed-window ``dims``-D average pool: every output element times the window's taps
    (``kernel`` one size per dim, or one for all)."""
    return math.prod(out_shape) * _taps(kernel, dims)


def adaptive_pool_macs(in_shape: Shape, out_shape: Shape, spatial: int) -> int:
    """An adaptive average pool over the last ``spatial`` dims: the taps of every window
    (windows ``[⌊iL/O⌋, ⌈(i+1)L/O⌉)`` per dim, as PyTorch computes them)."""
    taps = 1
    for length, out in zip(in_shape[-spatial:], out_shape[-spatial:], strict=True):
        taps *= sum(-((-(i + 1) * length) // out) - (i * length) // out for i in range(out))
    return math.prod(out_shape[:-spatial]) * taps


def reduction_macs(in_shape: Shape) -> int:
    """A mean over dims (a global pool): one per input element."""
    return math.prod(in_shape)


# --------------------------------------------------------------------------------------------
# layers, as rules see them


_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}


def _taps(kernel: Shape | int, dims: int) -> int:
    """Taps of a pool window; one size for every dim when given once (``kernel_size=2``)."""
    if isinstance(kernel, int):
        return kernel**dims
    if len(kernel) == 1:
        return kernel[0] ** dims
    return math.prod(kernel)


def _pool_dims(layer: object) -> int | None:
    return next((d for cls, d in _AVG_POOLS.items() if isinstance(layer, cls)), None)


def layer_macs(layer: nn.Module | Any, out_shape: Shape | AtShapes) -> int:
    """Multiply-adds of a conv (module or :class:`~reparam.convspec.ConvSpec`), a Linear or
    an average pool producing ``out_shape``; what :func:`count_macs` counts for that call
    (summed over the calls when given :class:`AtShapes`)."""
    if isinstance(out_shape, AtShapes):
        return sum(layer_macs(layer, shape) for shape in out_shape)
    dims = _pool_dims(layer)
    if dims is not None:
        return pool_macs(layer.kernel_size, out_shape, dims)
    if isinstance(layer, nn.Linear):
        return linear_macs(layer.in_features, out_shape)
    return conv_macs(layer.weight.shape, out_shape)


def per_output(layer: nn.Module | Any) -> int:
    """The fallback without shapes: multiply-adds of a conv / ConvSpec per output position
    (all output channels). An average pool, whose channel count is unknown here, is credited
    nothing: without shapes a merge must pay for itself in conv multiply-adds alone."""
    if _pool_dims(layer) is not None:
        return 0
    return math.prod(layer.weight.shape)


def total_macs(
    layers: Sequence[tuple[nn.Module | Any, Shape | AtShapes | None]],
) -> int | None:
    """Sum of :func:`layer_macs` over ``(layer, output shape)``; None if any shape is unknown
    (the caller then compares :func:`per_output` estimates instead)."""
    if any(shape is None for _, shape in layers):
        return None
    return sum(layer_macs(layer, shape) for layer, shape in layers)  # type: ignore[arg-type]


def compare(
    before: Sequence[tuple[nn.Module | Any, Shape | AtShapes | None]],
    after: Sequence[tuple[nn.Module | Any, Shape | AtShapes | None]],
) -> tuple[int, int, bool]:
    """``(before, after, exact)``: the multiply-adds of the layers a rewrite removes and of
    those it adds, on the example input's shapes when every one is known (``exact``; at each
    call's shapes when given :class:`AtShapes`), else
    per output position (each layer counted once per output position of the result)."""
    b, a = total_macs(before), total_macs(after)
    if b is not None and a is not None:
        return b, a, True
    return (
        sum(per_output(layer) for layer, _ in before),
        sum(per_output(layer) for layer, _ in after),
        False,
    )


def slower_reason(before: int, after: int, exact: bool, what: str = "the merged layer") -> str:
    """The refusal text of a merge that costs more (``allow_slower=True`` forces it)."""
    where = "on the example input" if exact else "per output position (shapes unknown)"
    return (
        f"{what} costs more multiply-adds than what it replaces ({after:,} vs "
        f"{before:,} {where}): slower (allow_slower=True to force)"
    )


# --------------------------------------------------------------------------------------------
# the whole-model count


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _op_macs(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    packet = func.overloadpacket
    aten = torch.ops.aten
    if packet in (aten.convolution, aten._convolution):
        x, w, transposed = args[0], args[1], args[6]
        if transposed:
            return conv_transpose_macs(_shape(w), _shape(x))
        return conv_macs(_shape(w), _shape(out))
    if packet in (aten.mm, aten.bmm):
        return matmul_macs(_shape(args[0]), _shape(args[1]))
    if packet in (aten.addmm, aten.baddbmm):
        return matmul_macs(_shape(args[1]), _shape(args[2]))
    pool_dims = {aten.avg_pool1d: 1, aten.avg_pool2d: 2, aten.avg_pool3d: 3}
    if packet in pool_dims:
        return pool_macs(args[1], _shape(out), pool_dims[packet])
    adaptive_dims = {aten._adaptive_avg_pool2d: 2, aten._adaptive_avg_pool3d: 3}
    if packet in adaptive_dims:
        return adaptive_pool_macs(_shape(args[0]), _shape(out), adaptive_dims[packet])
    if packet is aten.mean:
        return reduction_macs(_shape(args[0]))
    formula = flop_registry.get(packet)
    if formula is not None:
        return int(formula(*args, **kwargs, out_val=out)) // 2
    return 0


class MacCounter(TorchDispatchMode):
    """Counts the multiply-adds (this module's model) of every op run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.macs += _op_macs(func, args, kwargs, out)
        return out


def count_macs(model: nn.Module, inputs: tuple[Any, ...]) -> int:
    """Multiply-adds of one forward of ``model`` on ``inputs`` (tensors are not written)."""
    inputs = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, inputs)
    counter = MacCounter()
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.macs

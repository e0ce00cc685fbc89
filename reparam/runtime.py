r"""The modules a deployed model contains besides torch's own: a pickled deployed model needs
this module (and torch), not the rule files that placed them.

* :class:`GroupedPointwiseConv`: a grouped 1×1 conv on ``(N, C, 1, 1)`` inputs computed as
  one batched matmul, :math:`y_j = X_j W_j^\top + b_j` per group ``j`` (RepMLP,
  arXiv:2105.01883; placed by the ``grouped_fc_as_bmm`` rule, see
  :mod:`reparam.rules.grouped_fc` for when it is faster).
* :class:`FoldedNorm`: where a norm stood after :func:`reparam.deploy` folded its statistics
  into a neighbouring layer; it keeps the norm's children the rewritten forward still calls.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FoldedNorm", "GroupedPointwiseConv", "grouped_pointwise_conv2d"]


def grouped_pointwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for a 1×1 ``weight`` (stride 1, no padding),
    as a batched matmul when ``x`` is ``(N, C, 1, 1)``, as the conv otherwise."""
    if x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1:
        n = x.shape[0]
        out_channels, in_per_group = weight.shape[0], weight.shape[1]
        out_per_group = out_channels // groups
        xs = x.reshape(n, groups, in_per_group).transpose(0, 1)  # (g, N, I')
        ws = weight.reshape(groups, out_per_group, in_per_group).transpose(1, 2)  # (g, I', O')
        if bias is None:
            y = torch.bmm(xs, ws)
        else:
            y = torch.baddbmm(bias.reshape(groups, 1, out_per_group), xs, ws)
        return y.transpose(0, 1).reshape(n, out_channels, 1, 1)
    return F.conv2d(x, weight, bias, 1, 0, 1, groups)


# A single node when torch.fx traces through a GroupedPointwiseConv (plain symbolic_trace does:
# its class is not in torch.nn); the engine's own tracer keeps the module as a leaf.
torch.fx.wrap("grouped_pointwise_conv2d")


class GroupedPointwiseConv(nn.Conv2d):
    """A 1×1 ``nn.Conv2d`` (stride 1, no padding, no dilation) whose kernel is a batched matmul
    on ``(N, C, 1, 1)`` inputs (see :func:`grouped_pointwise_conv2d`) and the ordinary conv on
    any other input. Same parameters, same ``state_dict``, same function as the conv it replaces;
    ``forward`` is ``nn.Conv2d``'s, only ``_conv_forward`` differs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (
            self.kernel_size != (1, 1)
            or self.stride != (1, 1)
            or self.dilation != (1, 1)
            or self.padding not in ((0, 0), "valid")
        ):
            raise ValueError(
                "GroupedPointwiseConv is a 1×1 conv with stride 1, no padding and no dilation; "
                f"got kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}, "
                f"dilation {self.dilation}"
            )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GroupedPointwiseConv:
        """The same conv (sharing ``conv``'s parameter tensors) with the batched-matmul kernel."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            1,
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",  # no throw-away initialisation: the parameters are conv's
            dtype=conv.weight.dtype,
        )
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        new.train(conv.training)
        return new

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return grouped_pointwise_conv2d(input, weight, bias, self.groups)


class FoldedNorm(nn.Module):
    """Where a norm module stood after its statistics were folded into a neighbouring layer;
    it keeps the submodules (activation, dropout) that the rewritten forward still calls."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.folded_from = type(norm).__name__
        for name, child in norm.named_children():
            self.add_module(name, child)

    def extra_repr(self) -> str:
        return f"folded {self.folded_from}"

    def forward(self, *args: Any) -> Any:
        raise RuntimeError(
            f"this {self.folded_from} was folded into a neighbouring layer by "
            "reparam.deploy; call the deployed parent module instead"
        )


# The modules of this file that a trace keeps as one call: a deployed form is not structure to
# merge again, and its parent's rewritten forward must still call it (hooks, ``named_modules``).
LEAF_MODULES: tuple[type[nn.Module], ...] = (GroupedPointwiseConv,)

"""Shared building blocks of the RepMLP family.

Papers:

* RepMLP (v1): Ding et al., "RepMLP: Re-parameterizing Convolutions into Fully-connected Layers
  for Image Recognition", arXiv:2105.01883.
* RepMLPNet (v2): Ding et al., "RepMLPNet: Hierarchical Vision MLP with Re-parameterized
  Locality", arXiv:2112.11081.

Every module here is a plain *training-time* PyTorch module. Nothing in this package converts a
model: the generic engine (``reparam.deploy``) does that. To keep the engine's output loadable,
each module can also be built directly in its *inference form* (``inference=True``), which has
exactly the layout the engine produces:

* a conv+BN unit (:class:`ConvBN`) keeps ``conv`` (now with a bias) and ``bn`` becomes
  ``nn.Identity()``;
* a RepMLP block keeps only ``fc3`` (with a bias): ``fc3_bn`` becomes ``nn.Identity()`` and the
  Local Perceptron branches ``repconv{k}`` are absent;
* in the v1 block the BN after the Global Perceptron's pooling (``avg.bn``) becomes
  ``nn.Identity()`` (it is folded into ``fc1_fc2.fc1``, which keeps its bias);
* in a RepMLPNet unit the BN in front of the FFN (``prebn2``) becomes ``nn.Identity()``: it is
  folded into the FFN's first 1×1 conv (``ffn_block.ffn_fc1.conv``; exact, a 1×1 conv has no
  padding). ``prebn1`` stays: its output feeds both the gate and the partitions;
* RepMLPNet's head norm (``head_norm``) becomes ``nn.Identity()`` when there is a ``Linear``
  head: it is folded through the global pool into ``head``.

A folded norm leaves no key behind, so ``reparam.deploy(model).state_dict()`` loads strictly
into ``create_model(name, inference=True)`` (same keys, same shapes).

All modules are ``torch.fx.symbolic_trace``-able: no tensor size is unpacked into Python ints
while tracing. The detailed input checks (``ValueError`` with the sizes) run only when not
tracing; the partition geometry is also checked by a traceable ``torch._assert`` that survives
tracing and deploying, so a deployed model still fails with a message naming the block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model_api import Reparameterizable, is_tracing

__all__ = [
    "ConvBN",
    "GlobalPerceptron",
    "RepMLPBlock",
    "FFNBlock",
    "RepMLPNetUnit",
    "RepMLP",
    "Bottleneck",
    "RepMLPLightBlock",
    "RepMLPBottleneckBlock",
    "RepMLPStageConfig",
    "make_resnet_stage",
    "FeatureInfo",
    "is_tracing",
]


def _partition_message(name: str, h: int, w: int) -> str:
    return (
        f"{name}: the feature map does not divide into {h}x{w} partitions; use an input "
        f"resolution whose feature map here is a multiple of {h}x{w}"
    )


def _check_kernel_sizes(reparam_conv_k: Sequence[int], where: str) -> tuple[int, ...]:
    ks = tuple(int(k) for k in reparam_conv_k)
    for k in ks:
        if k < 1 or k % 2 == 0:
            raise ValueError(f"{where}: reparam_conv_k must hold odd kernel sizes, got {ks}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"{where}: duplicate kernel sizes in reparam_conv_k={ks}")
    return ks


class ConvBN(Reparameterizable, nn.Module):
    """A conv+BN unit: ``act(bn(conv(x)))`` (``act`` optional); the conv has no bias in the
    training form.

    Inference form (``inference=True``): ``conv`` has a bias and ``bn`` is ``nn.Identity()``,
    which is what the engine produces when it folds the BN into the conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: nn.Module | None = None,
        inference: bool = False,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = (
                kernel_size // 2
                if isinstance(kernel_size, int)
                else (kernel_size[0] // 2, kernel_size[1] // 2)
            )
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            groups=groups, bias=inference,
        )
        self.bn: nn.Module = nn.Identity() if inference else nn.BatchNorm2d(out_channels)
        # No activation: no `act` node at all in the traced graph (conv -> bn -> consumer).
        self.act: nn.Module | None = act

    def example_input_size(self) -> tuple[int, ...]:
        k = self.conv.kernel_size
        return (self.conv.in_channels, *k)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


# --------------------------------------------------------------------------------------------
# RepMLPNet (v2) block
# --------------------------------------------------------------------------------------------


class GlobalPerceptron(nn.Module):
    """v2 Global Perceptron: avgpool to 1x1 -> fc1 (C->C/r) -> ReLU -> fc2 -> sigmoid.

    Returns a per-channel gate of shape (N, C, 1, 1). Not re-parameterized.
    """

    def __init__(self, channels: int, internal_neurons: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, internal_neurons, 1, bias=True)
        self.fc2 = nn.Conv2d(internal_neurons, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        v = F.adaptive_avg_pool2d(x, 1)
        v = F.relu(self.fc1(v))
        return self.fc2(v).sigmoid()


class RepMLPBlock(Reparameterizable, nn.Module):
    """RepMLPNet block: Global Perceptron x (Channel Perceptron + Local Perceptron).

    The input (N, C, H, W) is cut into (H/h)x(W/w) partitions of h x w pixels. With ``S`` share
    sets, channel ``c`` uses share set ``c mod S``; the partitions are arranged as
    ``P = x.reshape(-1, C, H/h, h, W/w, w).permute(0, 2, 4, 1, 3, 5).reshape(-1, S, h, w)``
    (one row per (n, partition-row, partition-col, c // S)).

    * Channel Perceptron: ``fc3`` = ``Conv2d(S*h*w, S*h*w, 1, groups=S)`` on
      ``P.reshape(-1, S*h*w, 1, 1)``, reshaped back to (-1, S, h, w), then ``fc3_bn`` =
      ``BatchNorm2d(S)``.
    * Local Perceptron: ``repconv{k}`` = conv(S->S, k, padding k//2, groups=S)+BN units applied
      to ``P`` and added to the BN'd fc3 output.
    * Global Perceptron: a per-channel sigmoid gate multiplying the block output.

    Inference form: ``fc3`` with a bias, ``fc3_bn = nn.Identity()``, no ``repconv{k}``.
    The input height/width must be divisible by ``h``/``w``; any multiple works (several
    partitions per map) because the partition geometry is read from the input.
    """

    def __init__(
        self,
        channels: int,
        h: int,
        w: int,
        num_sharesets: int = 1,
        reparam_conv_k: Sequence[int] = (1, 3),
        globalperceptron_reduce: int = 4,
        inference: bool = False,
        name: str = "RepMLPBlock",
    ) -> None:
        super().__init__()
        if channels % num_sharesets:
            raise ValueError(
                f"{name}: channels ({channels}) must be divisible by num_sharesets "
                f"({num_sharesets})"
            )
        self.name = name
        self.C = channels
        self.S = num_sharesets
        self.h = h
        self.w = w
        self.inference = inference
        self.reparam_conv_k = _check_kernel_sizes(reparam_conv_k, name)
        self.gp = GlobalPerceptron(channels, channels // globalperceptron_reduce)
        n = num_sharesets * h * w
        self.fc3 = nn.Conv2d(n, n, 1, groups=num_sharesets, bias=inference)
        self.fc3_bn: nn.Module = nn.Identity() if inference else nn.BatchNorm2d(num_sharesets)
        if not inference:
            for k in self.reparam_conv_k:
                setattr(
                    self,
                    f"repconv{k}",
                    ConvBN(num_sharesets, num_sharesets, k, padding=k // 2, groups=num_sharesets),
                )

    def extra_repr(self) -> str:
        return (
            f"channels={self.C}, h={self.h}, w={self.w}, num_sharesets={self.S}, "
            f"reparam_conv_k={self.reparam_conv_k}, inference={self.inference}"
        )

    def example_input_size(self) -> tuple[int, ...]:
        return (self.C, self.h, self.w)

    def _local_branches(self) -> list[nn.Module]:
        # getattr, so a block whose repconv branches were deleted (deployed) still runs.
        found = (getattr(self, f"repconv{k}", None) for k in self.reparam_conv_k)
        return [b for b in found if b is not None]

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.C:
            raise ValueError(
                f"{self.name}: expected an input of shape (N, {self.C}, H, W), "
                f"got {tuple(x.shape)}"
            )
        H, W = int(x.shape[2]), int(x.shape[3])
        if H % self.h or W % self.w:
            raise ValueError(
                f"{self.name}: the {H}x{W} feature map does not divide into {self.h}x{self.w} "
                f"partitions; use an input resolution whose feature map here is a multiple "
                f"of {self.h}x{self.w}"
            )

    def forward(self, x: Tensor) -> Tensor:
        if not is_tracing():
            self._check_input(x)
        C, S, h, w = self.C, self.S, self.h, self.w
        H = x.shape[2]
        W = x.shape[3]
        # Traceable (a node of the fx graph): a deployed model, whose forward is a traced graph
        # without the eager check above, still stops here with a message naming the block.
        torch._assert((H % h == 0) & (W % w == 0), _partition_message(self.name, h, w))
        hp = H // h
        wp = W // w
        gate = self.gp(x)
        # (N, C, hp, h, wp, w) -> (N, hp, wp, C, h, w) -> rows of S channels: channel c -> c % S
        parts = x.reshape(-1, C, hp, h, wp, w).permute(0, 2, 4, 1, 3, 5).reshape(-1, S, h, w)
        out = self.fc3(parts.reshape(-1, S * h * w, 1, 1)).reshape(-1, S, h, w)
        out = self.fc3_bn(out)
        for branch in self._local_branches():
            out = out + branch(parts)
        out = out.reshape(-1, hp, wp, C, h, w).permute(0, 3, 1, 4, 2, 5).reshape(-1, C, H, W)
        return out * gate


class FFNBlock(nn.Module):
    """Feed-forward block: 1x1 conv+BN -> GELU -> 1x1 conv+BN."""

    def __init__(self, channels: int, hidden_channels: int, inference: bool = False) -> None:
        super().__init__()
        self.ffn_fc1 = ConvBN(channels, hidden_channels, 1, padding=0, inference=inference)
        self.act = nn.GELU()
        self.ffn_fc2 = ConvBN(hidden_channels, channels, 1, padding=0, inference=inference)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_fc2(self.act(self.ffn_fc1(x)))


class RepMLPNetUnit(Reparameterizable, nn.Module):
    """One RepMLPNet unit: ``y = x + block(prebn1(x)); z = y + ffn(prebn2(y))``.

    Inference form: ``prebn2`` is ``nn.Identity()`` (folded into the FFN's first 1x1 conv, which
    has a bias); ``prebn1`` stays (its output feeds the gate and the partitions).
    """

    def __init__(
        self,
        channels: int,
        h: int,
        w: int,
        num_sharesets: int = 1,
        reparam_conv_k: Sequence[int] = (1, 3),
        globalperceptron_reduce: int = 4,
        ffn_expand: int = 4,
        inference: bool = False,
        name: str = "RepMLPNetUnit",
    ) -> None:
        super().__init__()
        self.prebn1 = nn.BatchNorm2d(channels)
        self.repmlp_block = RepMLPBlock(
            channels, h, w, num_sharesets=num_sharesets, reparam_conv_k=reparam_conv_k,
            globalperceptron_reduce=globalperceptron_reduce, inference=inference,
            name=f"{name}.repmlp_block",
        )
        # Inference form: folded into ffn_block.ffn_fc1.conv (BN before a 1x1 conv, exact).
        self.prebn2: nn.Module = nn.Identity() if inference else nn.BatchNorm2d(channels)
        self.ffn_block = FFNBlock(channels, channels * ffn_expand, inference=inference)

    def example_input_size(self) -> tuple[int, ...]:
        return self.repmlp_block.example_input_size()

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.repmlp_block(self.prebn1(x))
        return y + self.ffn_block(self.prebn2(y))


# --------------------------------------------------------------------------------------------
# RepMLP (v1) block and the ResNet-style blocks that host it
# --------------------------------------------------------------------------------------------


class RepMLP(Reparameterizable, nn.Module):
    """The v1 RepMLP module (RepMLP-ResNet, RepMLP-FaceRes), for a fixed H x W feature map.

    * Global Perceptron (only when there is more than one partition): ``avg`` = AvgPool(h, w)
      -> ``avg.bn`` (BatchNorm2d(C)) -> flatten to C*hp*wp -> ``fc1_fc2`` (Linear -> ReLU ->
      Linear); the result is added to every pixel of its partition.
    * Partition Perceptron: partitions ``P`` of shape (-1, C, h, w) (one per (n, i, j));
      ``fc3`` = ``Conv2d(C*h*w, O*h*w, 1, groups=g)`` on ``P.reshape(-1, C*h*w, 1, 1)``,
      reshaped to (-1, O*h*w), ``fc3_bn`` = ``BatchNorm1d(O*h*w)``, reshaped to (-1, O, h, w).
    * Local Perceptron: ``repconv{k}`` = conv(C->O, k, padding k//2, groups=g)+BN units on ``P``,
      added to the fc3 output.

    Inference form: ``avg.bn`` -> Identity (folded into ``fc1_fc2.fc1``), ``fc3`` with a bias,
    ``fc3_bn`` -> Identity, no ``repconv{k}``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        H: int,
        W: int,
        h: int,
        w: int,
        reparam_conv_k: Sequence[int] = (1, 3, 5),
        fc1_fc2_reduction: int = 1,
        fc3_groups: int = 1,
        inference: bool = False,
        name: str = "RepMLP",
    ) -> None:
        super().__init__()
        if H % h or W % w:
            raise ValueError(f"{name}: the {H}x{W} feature map does not divide into {h}x{w} "
                             "partitions")
        if in_channels % fc3_groups or out_channels % fc3_groups:
            raise ValueError(f"{name}: channels ({in_channels}->{out_channels}) must be "
                             f"divisible by fc3_groups ({fc3_groups})")
        self.name = name
        self.C = in_channels
        self.O = out_channels
        self.H, self.W, self.h, self.w = H, W, h, w
        self.h_parts = H // h
        self.w_parts = W // w
        self.fc3_groups = fc3_groups
        self.inference = inference
        self.reparam_conv_k = _check_kernel_sizes(reparam_conv_k, name)
        self.need_global_perceptron = self.h_parts > 1 or self.w_parts > 1
        if self.need_global_perceptron:
            n = in_channels * self.h_parts * self.w_parts
            internal = n // fc1_fc2_reduction
            self.fc1_fc2 = nn.Sequential(OrderedDict(
                fc1=nn.Linear(n, internal), relu=nn.ReLU(), fc2=nn.Linear(internal, n),
            ))
            self.avg = nn.Sequential(OrderedDict(
                avg=nn.AvgPool2d((h, w)),
                bn=nn.Identity() if inference else nn.BatchNorm2d(in_channels),
            ))
        self.fc3 = nn.Conv2d(
            in_channels * h * w, out_channels * h * w, 1, groups=fc3_groups, bias=inference
        )
        self.fc3_bn: nn.Module = (
            nn.Identity() if inference else nn.BatchNorm1d(out_channels * h * w)
        )
        if not inference:
            for k in self.reparam_conv_k:
                setattr(self, f"repconv{k}", ConvBN(in_channels, out_channels, k,
                                                    padding=k // 2, groups=fc3_groups))

    def extra_repr(self) -> str:
        return (
            f"{self.C}->{self.O}, H={self.H}, W={self.W}, h={self.h}, w={self.w}, "
            f"fc3_groups={self.fc3_groups}, reparam_conv_k={self.reparam_conv_k}, "
            f"inference={self.inference}"
        )

    def example_input_size(self) -> tuple[int, ...]:
        return (self.C, self.H, self.W)

    def _local_branches(self) -> list[nn.Module]:
        found = (getattr(self, f"repconv{k}", None) for k in self.reparam_conv_k)
        return [b for b in found if b is not None]

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.C, self.H, self.W):
            raise ValueError(
                f"{self.name}: expected an input of shape (N, {self.C}, {self.H}, {self.W}) "
                f"(this block is built for a fixed resolution), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        if not is_tracing():
            self._check_input(x)
        # Traceable twin of the check above; it survives tracing and deploying.
        torch._assert(
            (x.shape[2] == self.H) & (x.shape[3] == self.W),
            f"{self.name}: this block is built for a fixed {self.H}x{self.W} feature map; "
            "feed the input resolution the model was built for (its img_size)",
        )
        C, O, h, w = self.C, self.O, self.h, self.w
        hp, wp = self.h_parts, self.w_parts
        x6 = x.reshape(-1, C, hp, h, wp, w)
        if self.need_global_perceptron:
            v = self.fc1_fc2(self.avg(x).reshape(-1, C * hp * wp))
            x6 = x6 + v.reshape(-1, C, hp, 1, wp, 1)
        parts = x6.permute(0, 2, 4, 1, 3, 5).reshape(-1, C, h, w)
        out = self.fc3(parts.reshape(-1, C * h * w, 1, 1)).reshape(-1, O * h * w)
        out = self.fc3_bn(out).reshape(-1, O, h, w)
        for branch in self._local_branches():
            out = out + branch(parts)
        return out.reshape(-1, hp, wp, O, h, w).permute(0, 3, 1, 4, 2, 5).reshape(
            -1, O, self.H, self.W
        )


class Bottleneck(Reparameterizable, nn.Module):
    """Plain ResNet bottleneck (stride on the 3x3 conv): 1x1 -> 3x3 -> 1x1, + shortcut, ReLU."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        inference: bool = False,
    ) -> None:
        super().__init__()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvBN(in_channels, out_channels, 1, stride=stride,
                                              padding=0, inference=inference)
        else:
            self.shortcut = nn.Identity()
        self.conv1 = ConvBN(in_channels, mid_channels, 1, padding=0, act=nn.ReLU(),
                            inference=inference)
        self.conv2 = ConvBN(mid_channels, mid_channels, 3, stride=stride, padding=1,
                            act=nn.ReLU(), inference=inference)
        self.conv3 = ConvBN(mid_channels, out_channels, 1, padding=0, inference=inference)
        self.relu = nn.ReLU()

    def example_input_size(self) -> tuple[int, ...]:
        return (self.conv1.conv.in_channels, 4, 4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


class RepMLPLightBlock(Reparameterizable, nn.Module):
    """RepMLP Light block: 1x1 (C->C/8) -> RepMLP -> ReLU -> 1x1 (->C), + shortcut, ReLU."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        H: int,
        W: int,
        h: int,
        w: int,
        reparam_conv_k: Sequence[int] = (1, 3, 5),
        fc1_fc2_reduction: int = 1,
        fc3_groups: int = 1,
        inference: bool = False,
        name: str = "RepMLPLightBlock",
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            self.shortcut: nn.Module = ConvBN(in_channels, out_channels, 1, padding=0,
                                              inference=inference)
        else:
            self.shortcut = nn.Identity()
        self.light_conv1 = ConvBN(in_channels, mid_channels, 1, padding=0, act=nn.ReLU(),
                                  inference=inference)
        self.light_repmlp = RepMLP(
            mid_channels, mid_channels, H, W, h, w, reparam_conv_k=reparam_conv_k,
            fc1_fc2_reduction=fc1_fc2_reduction, fc3_groups=fc3_groups, inference=inference,
            name=f"{name}.light_repmlp",
        )
        self.repmlp_nonlinear = nn.ReLU()
        self.light_conv3 = ConvBN(mid_channels, out_channels, 1, padding=0, inference=inference)
        self.relu = nn.ReLU()

    def example_input_size(self) -> tuple[int, ...]:
        return (self.light_conv1.conv.in_channels, self.light_repmlp.H, self.light_repmlp.W)

    def forward(self, x: Tensor) -> Tensor:
        out = self.repmlp_nonlinear(self.light_repmlp(self.light_conv1(x)))
        out = self.light_conv3(out)
        return self.relu(out + self.shortcut(x))


class RepMLPBottleneckBlock(Reparameterizable, nn.Module):
    """RepMLP Bottleneck: 1x1 (C->mid) -> 3x3 (mid->mid/r) -> RepMLP -> ReLU -> 3x3 (->mid)
    -> 1x1 (->C), + shortcut, ReLU."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        r: int,
        H: int,
        W: int,
        h: int,
        w: int,
        reparam_conv_k: Sequence[int] = (1, 3, 5),
        fc1_fc2_reduction: int = 1,
        fc3_groups: int = 1,
        inference: bool = False,
        name: str = "RepMLPBottleneckBlock",
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            self.shortcut: nn.Module = ConvBN(in_channels, out_channels, 1, padding=0,
                                              inference=inference)
        else:
            self.shortcut = nn.Identity()
        repmlp_channels = mid_channels // r
        self.btnk_conv1 = ConvBN(in_channels, mid_channels, 1, padding=0, act=nn.ReLU(),
                                 inference=inference)
        self.btnk_conv2 = ConvBN(mid_channels, repmlp_channels, 3, padding=1, act=nn.ReLU(),
                                 inference=inference)
        self.btnk_repmlp = RepMLP(
            repmlp_channels, repmlp_channels, H, W, h, w, reparam_conv_k=reparam_conv_k,
            fc1_fc2_reduction=fc1_fc2_reduction, fc3_groups=fc3_groups, inference=inference,
            name=f"{name}.btnk_repmlp",
        )
        self.repmlp_nonlinear = nn.ReLU()
        self.btnk_conv4 = ConvBN(repmlp_channels, mid_channels, 3, padding=1, act=nn.ReLU(),
                                 inference=inference)
        self.btnk_conv5 = ConvBN(mid_channels, out_channels, 1, padding=0, inference=inference)
        self.relu = nn.ReLU()

    def example_input_size(self) -> tuple[int, ...]:
        return (self.btnk_conv1.conv.in_channels, self.btnk_repmlp.H, self.btnk_repmlp.W)

    def forward(self, x: Tensor) -> Tensor:
        out = self.btnk_conv2(self.btnk_conv1(x))
        out = self.repmlp_nonlinear(self.btnk_repmlp(out))
        out = self.btnk_conv5(self.btnk_conv4(out))
        return self.relu(out + self.shortcut(x))


@dataclass(frozen=True)
class RepMLPStageConfig:
    """How the stride-1 blocks of one ResNet stage are replaced by RepMLP blocks."""

    block_type: str  # "light" or "bottleneck"
    H: int
    W: int
    h: int
    w: int
    reparam_conv_k: tuple[int, ...] = (1, 3, 5)
    fc1_fc2_reduction: int = 1
    fc3_groups: int = 1
    r: int = 2  # bottleneck only: RepMLP channels = mid // r
    light_mid_divisor: int = 8  # light only: mid = out // 8


def make_resnet_stage(
    in_channels: int,
    out_channels: int,
    mid_channels: int,
    depth: int,
    stride: int,
    repmlp: RepMLPStageConfig | None = None,
    inference: bool = False,
    name: str = "stage",
) -> nn.Sequential:
    """A ResNet stage. The first block is always a plain bottleneck (it carries the stride /
    projection); with ``repmlp`` the remaining stride-1 blocks are RepMLP blocks."""
    blocks: list[nn.Module] = [
        Bottleneck(in_channels, mid_channels, out_channels, stride=stride, inference=inference)
    ]
    for i in range(1, depth):
        block_name = f"{name}.{i}"
        if repmlp is None:
            blocks.append(Bottleneck(out_channels, mid_channels, out_channels,
                                     inference=inference))
        elif repmlp.block_type == "light":
            blocks.append(RepMLPLightBlock(
                out_channels, out_channels // repmlp.light_mid_divisor, out_channels,
                repmlp.H, repmlp.W, repmlp.h, repmlp.w, reparam_conv_k=repmlp.reparam_conv_k,
                fc1_fc2_reduction=repmlp.fc1_fc2_reduction, fc3_groups=repmlp.fc3_groups,
                inference=inference, name=block_name,
            ))
        elif repmlp.block_type == "bottleneck":
            blocks.append(RepMLPBottleneckBlock(
                out_channels, mid_channels, out_channels, repmlp.r,
                repmlp.H, repmlp.W, repmlp.h, repmlp.w, reparam_conv_k=repmlp.reparam_conv_k,
                fc1_fc2_reduction=repmlp.fc1_fc2_reduction, fc3_groups=repmlp.fc3_groups,
                inference=inference, name=block_name,
            ))
        else:
            raise ValueError(f"{name}: unknown RepMLP block type {repmlp.block_type!r} "
                             "(expected 'light' or 'bottleneck')")
    return nn.Sequential(*blocks)


class FeatureInfo(list[dict[str, Any]]):
    """timm-style feature metadata: a list of ``{"num_chs", "reduction", "module"}`` dicts, one
    per stage, and the stages a ``features_only`` model returns (``out_indices``; all of them
    otherwise). As in timm, ``len()`` and indexing see every stage; ``channels()``,
    ``reduction()``, ``module_name()`` and ``get_dicts()`` the selected ones (or stage ``idx``).
    """

    def __init__(self, info: Sequence[dict[str, Any]] = (),
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__(info)
        self._out_indices = None if out_indices is None else tuple(out_indices)

    @property
    def out_indices(self) -> tuple[int, ...]:
        return tuple(range(len(self))) if self._out_indices is None else self._out_indices

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def get_dicts(self, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [dict(self[i]) for i in self.out_indices]
        if isinstance(idx, int):
            return dict(self[idx])
        return [dict(self[i]) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

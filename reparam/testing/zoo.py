"""A zoo of small, complete re-parameterizable models written the way their authors would.

These do not use :mod:`reparam.testing.strategies`: each family is hand-written in its own
idiom (RepVGG's ``rbr_*`` attributes and ``id_out = 0``, ACNet's separate conv/BN attributes,
DBB's BN-and-pad and in-place ``+=``, MobileOne's ``ModuleList`` of over-parameterized
branches, RepLKNet's pre-BN block with a large depthwise kernel, UniRepLKNet's dilated
branches looked up by ``getattr``). Every ``make_*`` returns an eval-mode model in ``dtype``
on the CPU with randomized norms; weights are a pure function of ``seed``.

* :data:`ZOO` -- name -> training-form builder.
* :data:`PLAIN_TWINS` -- name -> builder of the deploy-form architecture (one conv where the
  block had branches): what a merged model should look like structurally. Its weights are
  random, not the merge of the training form.
* :data:`ZOO_INPUT_SHAPES` / :func:`zoo_example_input` -- an input each model accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reparam.testing._common import randomize_norms, seeded

__all__ = [
    "PLAIN_TWINS",
    "ZOO",
    "ZOO_INPUT_SHAPES",
    "make_acnet",
    "make_acnet_plain",
    "make_dbb",
    "make_dbb_plain",
    "make_dbb_slice_assign",
    "make_mobileone",
    "make_mobileone_plain",
    "make_replknet_block",
    "make_replknet_block_plain",
    "make_repvgg",
    "make_repvgg_plain",
    "make_unireplknet_block",
    "make_unireplknet_block_plain",
    "zoo_example_input",
]


def _finish(model: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    randomize_norms(model, torch.Generator().manual_seed(seed + 7919))
    return model.to(dtype=dtype).eval()


# ============================================================================================
# RepVGG-like: rbr_dense (3x3 conv-bn) + rbr_1x1 (1x1 conv-bn) + rbr_identity (BN), then ReLU
# ============================================================================================


def conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups=1):
    result = nn.Sequential()
    result.add_module(
        "conv",
        nn.Conv2d(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        ),
    )
    result.add_module("bn", nn.BatchNorm2d(num_features=out_channels))
    return result


class RepVGGBlock(nn.Module):
    def __init__(
        self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, groups=1, deploy=False
    ):
        super().__init__()
        self.deploy = deploy
        self.groups = groups
        self.in_channels = in_channels
        assert kernel_size == 3
        assert padding == 1
        padding_11 = padding - kernel_size // 2
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
        else:
            self.rbr_identity = (
                nn.BatchNorm2d(num_features=in_channels)
                if out_channels == in_channels and stride == 1
                else None
            )
            self.rbr_dense = conv_bn(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups
            )
            self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, padding_11, groups=groups)

    def forward(self, inputs):
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.rbr_reparam(inputs))
        if self.rbr_identity is None:
            id_out = 0
        else:
            id_out = self.rbr_identity(inputs)
        return self.nonlinearity(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + id_out)


class RepVGG(nn.Module):
    def __init__(
        self,
        num_blocks=(1, 2, 2, 1),
        num_classes=10,
        width=(8, 16, 16, 32),
        override_groups_map=None,
        deploy=False,
    ):
        super().__init__()
        self.deploy = deploy
        self.override_groups_map = override_groups_map or {}
        self.in_planes = min(8, width[0])
        self.stage0 = RepVGGBlock(3, self.in_planes, 3, stride=2, padding=1, deploy=deploy)
        self.cur_layer_idx = 1
        self.stage1 = self._make_stage(width[0], num_blocks[0], stride=1)
        self.stage2 = self._make_stage(width[1], num_blocks[1], stride=2)
        self.stage3 = self._make_stage(width[2], num_blocks[2], stride=2)
        self.stage4 = self._make_stage(width[3], num_blocks[3], stride=2)
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(width[3], num_classes)

    def _make_stage(self, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        blocks = []
        for stride in strides:
            cur_groups = self.override_groups_map.get(self.cur_layer_idx, 1)
            blocks.append(
                RepVGGBlock(
                    self.in_planes,
                    planes,
                    3,
                    stride=stride,
                    padding=1,
                    groups=cur_groups,
                    deploy=self.deploy,
                )
            )
            self.in_planes = planes
            self.cur_layer_idx += 1
        return nn.Sequential(*blocks)

    def forward_features(self, x):
        out = self.stage0(x)
        out = self.stage1(out)
        out = self.stage2(out)
        out = self.stage3(out)
        out = self.stage4(out)
        return out

    def forward(self, x):
        out = self.forward_features(x)
        out = self.gap(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)


_REPVGG_GROUPS = {2: 2, 4: 2, 6: 4}


def make_repvgg(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """RepVGG-like net: stem + 4 stages of 3x3/1x1/BN-identity blocks, some grouped."""
    with seeded(seed):
        model = RepVGG(override_groups_map=_REPVGG_GROUPS)
    return _finish(model, seed, dtype)


def make_repvgg_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The deploy form of :func:`make_repvgg`: one biased 3x3 conv + ReLU per block."""
    with seeded(seed):
        model = RepVGG(override_groups_map=_REPVGG_GROUPS, deploy=True)
    return _finish(model, seed, dtype)


# ============================================================================================
# ACNet-like: square kxk + horizontal 1xk + vertical kx1, each with its own BN attribute
# ============================================================================================


class ACBlock(nn.Module):
    """Asymmetric convolution block; BN attributes kept next to their convs."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        padding_mode="zeros",
        deploy=False,
    ):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.fused_conv = nn.Conv2d(
                in_channels,
                out_channels,
                (kernel_size, kernel_size),
                stride,
                padding,
                dilation,
                groups,
                bias=True,
                padding_mode=padding_mode,
            )
            return
        self.square_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, kernel_size),
            stride,
            padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.square_bn = nn.BatchNorm2d(out_channels)
        hor_padding = (0, padding)
        ver_padding = (padding, 0)
        self.ver_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, 1),
            stride,
            ver_padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.hor_conv = nn.Conv2d(
            in_channels,
            out_channels,
            (1, kernel_size),
            stride,
            hor_padding,
            dilation,
            groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.hor_bn = nn.BatchNorm2d(out_channels)

    def forward(self, input):
        if self.deploy:
            return self.fused_conv(input)
        square_outputs = self.square_conv(input)
        square_outputs = self.square_bn(square_outputs)
        vertical_outputs = self.ver_conv(input)
        vertical_outputs = self.ver_bn(vertical_outputs)
        horizontal_outputs = self.hor_conv(input)
        horizontal_outputs = self.hor_bn(horizontal_outputs)
        return square_outputs + vertical_outputs + horizontal_outputs


class ACNetCifar(nn.Module):
    def __init__(self, deploy=False, num_classes=10):
        super().__init__()
        cfg = [(3, 8, 1, 1), (8, 16, 2, 1), (16, 16, 1, 4), (16, 16, 2, 16)]
        layers = []
        for cin, cout, stride, groups in cfg:
            layers.append(
                ACBlock(cin, cout, 3, stride=stride, padding=1, groups=groups, deploy=deploy)
            )
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.body(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def make_acnet(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """ACNet-like CNN: 3x3 + 1x3 + 3x1 conv-BN blocks (dense, grouped and depthwise)."""
    with seeded(seed):
        model = ACNetCifar()
    return _finish(model, seed, dtype)


def make_acnet_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_acnet`."""
    with seeded(seed):
        model = ACNetCifar(deploy=True)
    return _finish(model, seed, dtype)


# ============================================================================================
# DBB-like: kxk, 1x1, 1x1->avg, 1x1->kxk branches; BN-and-pad; in-place accumulation
# ============================================================================================


class BNAndPadLayer(nn.Module):
    """BN, then pad with what the BN outputs for 0 (so a later unpadded conv sees the same
    border as if the 1x1 conv input had been zero padded).

    ``use_slice_assign=True`` fills the border by slice assignment like the original DBB code
    (not traceable by ``torch.fx``); otherwise with ``F.pad`` arithmetic.
    """

    def __init__(
        self,
        pad_pixels,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        use_slice_assign=False,
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)
        self.pad_pixels = pad_pixels
        self.use_slice_assign = use_slice_assign

    def _pad_values(self):
        if self.bn.affine:
            return self.bn.bias - self.bn.running_mean * self.bn.weight / torch.sqrt(
                self.bn.running_var + self.bn.eps
            )
        return -self.bn.running_mean / torch.sqrt(self.bn.running_var + self.bn.eps)

    def forward(self, input):
        output = self.bn(input)
        if self.pad_pixels <= 0:
            return output
        p = self.pad_pixels
        pad_values = self._pad_values().view(1, -1, 1, 1)
        if not self.use_slice_assign:
            return F.pad(output - pad_values, [p, p, p, p]) + pad_values
        output = F.pad(output, [p] * 4)
        output[:, :, 0:p, :] = pad_values
        output[:, :, -p:, :] = pad_values
        output[:, :, :, 0:p] = pad_values
        output[:, :, :, -p:] = pad_values
        return output


def _conv_bn_dbb(in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1):
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
    )
    bn = nn.BatchNorm2d(out_channels)
    se = nn.Sequential()
    se.add_module("conv", conv)
    se.add_module("bn", bn)
    return se


class DiverseBranchBlock(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        groups=1,
        internal_channels_1x1_3x3=None,
        deploy=False,
        nonlinear=None,
        use_slice_assign=False,
    ):
        super().__init__()
        self.deploy = deploy
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        self.kernel_size = kernel_size
        self.groups = groups
        assert padding == kernel_size // 2
        if deploy:
            self.dbb_reparam = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
            return
        self.dbb_origin = _conv_bn_dbb(
            in_channels, out_channels, kernel_size, stride, padding, groups
        )
        self.dbb_avg = nn.Sequential()
        if groups < out_channels:
            self.dbb_avg.add_module(
                "conv", nn.Conv2d(in_channels, out_channels, 1, 1, 0, groups=groups, bias=False)
            )
            self.dbb_avg.add_module(
                "bn", BNAndPadLayer(padding, out_channels, use_slice_assign=use_slice_assign)
            )
            self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, 0))
            self.dbb_1x1 = _conv_bn_dbb(in_channels, out_channels, 1, stride, 0, groups)
        else:
            self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, padding))
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(out_channels))

        if internal_channels_1x1_3x3 is None:
            internal_channels_1x1_3x3 = in_channels if groups < out_channels else 2 * in_channels
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module(
            "conv1",
            nn.Conv2d(in_channels, internal_channels_1x1_3x3, 1, 1, 0, groups=groups, bias=False),
        )
        self.dbb_1x1_kxk.add_module(
            "bn1",
            BNAndPadLayer(padding, internal_channels_1x1_3x3, use_slice_assign=use_slice_assign),
        )
        self.dbb_1x1_kxk.add_module(
            "conv2",
            nn.Conv2d(
                internal_channels_1x1_3x3,
                out_channels,
                kernel_size,
                stride,
                0,
                groups=groups,
                bias=False,
            ),
        )
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(out_channels))

    def forward(self, inputs):
        if hasattr(self, "dbb_reparam"):
            return self.nonlinear(self.dbb_reparam(inputs))
        out = self.dbb_origin(inputs)
        if hasattr(self, "dbb_1x1"):
            out += self.dbb_1x1(inputs)
        out += self.dbb_avg(inputs)
        out += self.dbb_1x1_kxk(inputs)
        return self.nonlinear(out)


class DBBNet(nn.Module):
    def __init__(self, deploy=False, use_slice_assign=False, num_classes=10):
        super().__init__()
        cfg = [(3, 8, 3, 2, 1), (8, 16, 3, 1, 2), (16, 16, 5, 2, 16), (16, 16, 3, 1, 1)]
        blocks = []
        for cin, cout, k, s, g in cfg:
            blocks.append(
                DiverseBranchBlock(
                    cin,
                    cout,
                    k,
                    s,
                    k // 2,
                    groups=g,
                    deploy=deploy,
                    nonlinear=nn.ReLU(),
                    use_slice_assign=use_slice_assign,
                )
            )
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def make_dbb(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """DBB-like net (BN-and-pad written with ``F.pad``; fx-traceable)."""
    with seeded(seed):
        model = DBBNet()
    return _finish(model, seed, dtype)


def make_dbb_slice_assign(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Like :func:`make_dbb`, BN-and-pad filling the border by slice assignment (not
    fx-traceable, as in the original DBB code)."""
    with seeded(seed):
        model = DBBNet(use_slice_assign=True)
    return _finish(model, seed, dtype)


def make_dbb_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_dbb`."""
    with seeded(seed):
        model = DBBNet(deploy=True)
    return _finish(model, seed, dtype)


# ============================================================================================
# MobileOne-like: k over-parameterized conv-bn branches + 1x1 scale branch + BN skip
# ============================================================================================


class MobileOneBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        inference_mode: bool = False,
        num_conv_branches: int = 1,
    ) -> None:
        super().__init__()
        self.inference_mode = inference_mode
        self.groups = groups
        self.stride = stride
        self.kernel_size = kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_conv_branches = num_conv_branches
        self.se = nn.Identity()
        self.activation = nn.ReLU()

        if inference_mode:
            self.reparam_conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=True
            )
        else:
            self.rbr_skip = (
                nn.BatchNorm2d(num_features=in_channels)
                if out_channels == in_channels and stride == 1
                else None
            )
            rbr_conv = list()
            for _ in range(self.num_conv_branches):
                rbr_conv.append(self._conv_bn(kernel_size=kernel_size, padding=padding))
            self.rbr_conv = nn.ModuleList(rbr_conv)
            self.rbr_scale = None
            if kernel_size > 1:
                self.rbr_scale = self._conv_bn(kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference_mode:
            return self.activation(self.se(self.reparam_conv(x)))
        identity_out = 0
        if self.rbr_skip is not None:
            identity_out = self.rbr_skip(x)
        scale_out = 0
        if self.rbr_scale is not None:
            scale_out = self.rbr_scale(x)
        out = scale_out + identity_out
        for ix in range(self.num_conv_branches):
            out += self.rbr_conv[ix](x)
        return self.activation(self.se(out))

    def _conv_bn(self, kernel_size: int, padding: int) -> nn.Sequential:
        mod_list = nn.Sequential()
        mod_list.add_module(
            "conv",
            nn.Conv2d(
                self.in_channels,
                self.out_channels,
                kernel_size,
                self.stride,
                padding,
                groups=self.groups,
                bias=False,
            ),
        )
        mod_list.add_module("bn", nn.BatchNorm2d(num_features=self.out_channels))
        return mod_list


class MobileOneNet(nn.Module):
    def __init__(self, inference_mode=False, num_classes=10, k=3):
        super().__init__()
        self.stage0 = MobileOneBlock(3, 8, 3, stride=2, padding=1, inference_mode=inference_mode)
        plan = [(8, 8, 1), (8, 16, 2), (16, 16, 1)]
        layers = []
        for cin, cout, stride in plan:
            # depthwise kxk then pointwise 1x1, both over-parameterized k times
            layers.append(
                MobileOneBlock(
                    cin,
                    cin,
                    3,
                    stride=stride,
                    padding=1,
                    groups=cin,
                    inference_mode=inference_mode,
                    num_conv_branches=k,
                )
            )
            layers.append(
                MobileOneBlock(
                    cin,
                    cout,
                    1,
                    stride=1,
                    padding=0,
                    inference_mode=inference_mode,
                    num_conv_branches=k,
                )
            )
        self.stages = nn.Sequential(*layers)
        self.gap = nn.AdaptiveAvgPool2d(output_size=1)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stage0(x)
        x = self.stages(x)
        x = self.gap(x)
        x = x.view(x.size(0), -1)
        return self.linear(x)


def make_mobileone(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """MobileOne-like net: depthwise/pointwise blocks with 3 conv branches, scale, BN skip."""
    with seeded(seed):
        model = MobileOneNet()
    return _finish(model, seed, dtype)


def make_mobileone_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_mobileone`."""
    with seeded(seed):
        model = MobileOneNet(inference_mode=True)
    return _finish(model, seed, dtype)


# ============================================================================================
# RepLKNet-like block: pre-BN, 1x1, large depthwise kernel + parallel small kernel, 1x1
# ============================================================================================


def get_conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias):
    return nn.Conv2d(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def conv_bn_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation=1):
    if padding is None:
        padding = kernel_size // 2
    result = nn.Sequential()
    result.add_module(
        "conv",
        get_conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False
        ),
    )
    result.add_module("bn", nn.BatchNorm2d(out_channels))
    return result


def conv_bn_relu_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation=1):
    result = conv_bn_lk(in_channels, out_channels, kernel_size, stride, padding, groups, dilation)
    result.add_module("nonlinear", nn.ReLU())
    return result


class ReparamLargeKernelConv(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        groups,
        small_kernel,
        small_kernel_merged=False,
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        padding = kernel_size // 2
        if small_kernel_merged:
            self.lkb_reparam = get_conv2d(
                in_channels, out_channels, kernel_size, stride, padding, 1, groups, bias=True
            )
        else:
            self.lkb_origin = conv_bn_lk(
                in_channels, out_channels, kernel_size, stride, padding, groups
            )
            if small_kernel is not None:
                assert small_kernel <= kernel_size
                self.small_conv = conv_bn_lk(
                    in_channels, out_channels, small_kernel, stride, small_kernel // 2, groups
                )

    def forward(self, inputs):
        if hasattr(self, "lkb_reparam"):
            out = self.lkb_reparam(inputs)
        else:
            out = self.lkb_origin(inputs)
            if hasattr(self, "small_conv"):
                out += self.small_conv(inputs)
        return out


class RepLKBlock(nn.Module):
    def __init__(
        self, in_channels, dw_channels, block_lk_size, small_kernel, small_kernel_merged=False
    ):
        super().__init__()
        self.pw1 = conv_bn_relu_lk(in_channels, dw_channels, 1, 1, 0, groups=1)
        self.pw2 = conv_bn_lk(dw_channels, in_channels, 1, 1, 0, groups=1)
        self.large_kernel = ReparamLargeKernelConv(
            dw_channels,
            dw_channels,
            block_lk_size,
            stride=1,
            groups=dw_channels,
            small_kernel=small_kernel,
            small_kernel_merged=small_kernel_merged,
        )
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = nn.BatchNorm2d(in_channels)
        self.drop_path = nn.Identity()

    def forward(self, x):
        out = self.prelkb_bn(x)
        out = self.pw1(out)
        out = self.large_kernel(out)
        out = self.lk_nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)


class RepLKStage(nn.Module):
    def __init__(
        self,
        channels=8,
        num_blocks=2,
        lk_size=13,
        small_kernel=5,
        dw_ratio=2,
        small_kernel_merged=False,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.blocks = nn.ModuleList(
            [
                RepLKBlock(
                    channels,
                    channels * dw_ratio,
                    lk_size,
                    small_kernel,
                    small_kernel_merged=small_kernel_merged,
                )
                for _ in range(num_blocks)
            ]
        )
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        x = self.stem(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def make_replknet_block(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A stem + two RepLKNet-like blocks (13x13 depthwise + parallel 5x5), pre-BN residual."""
    with seeded(seed):
        model = RepLKStage()
    return _finish(model, seed, dtype)


def make_replknet_block_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_replknet_block` (small kernel merged into the large one).

    The pre-BN stays a separate layer here; an engine may also fold it into ``pw1``."""
    with seeded(seed):
        model = RepLKStage(small_kernel_merged=True)
    return _finish(model, seed, dtype)


# ============================================================================================
# UniRepLKNet-like dilated re-param block: large depthwise + dilated small depthwise branches
# ============================================================================================


class DilatedReparamBlock(nn.Module):
    """Branches are attributes named by kernel size and dilation, fetched with getattr."""

    def __init__(self, channels, kernel_size, deploy=False):
        super().__init__()
        self.lk_origin = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            stride=1,
            padding=kernel_size // 2,
            dilation=1,
            groups=channels,
            bias=deploy,
        )
        if kernel_size == 7:
            self.kernel_sizes = [5, 3, 3]
            self.dilates = [1, 2, 3]
        elif kernel_size == 9:
            self.kernel_sizes = [5, 5, 3, 3]
            self.dilates = [1, 2, 3, 4]
        else:
            raise ValueError("this toy only knows kernel sizes 7 and 9")
        self.deploy = deploy
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
                self.__setattr__(
                    f"dil_conv_k{k}_{r}",
                    nn.Conv2d(
                        channels,
                        channels,
                        k,
                        stride=1,
                        padding=(r * (k - 1) + 1) // 2,
                        dilation=r,
                        groups=channels,
                        bias=False,
                    ),
                )
                self.__setattr__(f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def forward(self, x):
        if self.deploy:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            conv = self.__getattr__(f"dil_conv_k{k}_{r}")
            bn = self.__getattr__(f"dil_bn_k{k}_{r}")
            out = out + bn(conv(x))
        return out


class UniRepLKBlock(nn.Module):
    def __init__(self, dim, kernel_size=9, deploy=False, ffn_factor=2):
        super().__init__()
        self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy)
        self.norm = nn.Identity() if deploy else nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, ffn_factor * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(ffn_factor * dim, dim)
        self.gamma = nn.Parameter(0.5 * torch.ones(dim))

    def forward(self, inputs):
        y = self.norm(self.dwconv(inputs))
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        y = y * self.gamma
        return inputs + y.permute(0, 3, 1, 2)


def make_unireplknet_block(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Two UniRepLKNet-like blocks (9x9 depthwise + dilated 5/5/3/3 branches, then a BN)."""
    with seeded(seed):
        model = nn.Sequential(UniRepLKBlock(8, 9), UniRepLKBlock(8, 7))
    return _finish(model, seed, dtype)


def make_unireplknet_block_plain(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Deploy form of :func:`make_unireplknet_block` (one biased depthwise conv, no BN)."""
    with seeded(seed):
        model = nn.Sequential(UniRepLKBlock(8, 9, deploy=True), UniRepLKBlock(8, 7, deploy=True))
    return _finish(model, seed, dtype)


# ============================================================================================

#: name -> training-form builder ``(seed=0, dtype=torch.float64) -> nn.Module``.
ZOO: dict[str, Callable[..., nn.Module]] = {
    "repvgg": make_repvgg,
    "acnet": make_acnet,
    "dbb": make_dbb,
    "dbb_slice_assign": make_dbb_slice_assign,
    "mobileone": make_mobileone,
    "replknet_block": make_replknet_block,
    "unireplknet_block": make_unireplknet_block,
}

#: name -> deploy-form (plain) builder, same signature; random weights.
PLAIN_TWINS: dict[str, Callable[..., nn.Module]] = {
    "repvgg": make_repvgg_plain,
    "acnet": make_acnet_plain,
    "dbb": make_dbb_plain,
    "dbb_slice_assign": make_dbb_plain,
    "mobileone": make_mobileone_plain,
    "replknet_block": make_replknet_block_plain,
    "unireplknet_block": make_unireplknet_block_plain,
}

#: name -> an input shape the model accepts.
ZOO_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "repvgg": (2, 3, 32, 32),
    "acnet": (2, 3, 16, 16),
    "dbb": (2, 3, 16, 16),
    "dbb_slice_assign": (2, 3, 16, 16),
    "mobileone": (2, 3, 16, 16),
    "replknet_block": (2, 3, 16, 16),
    "unireplknet_block": (2, 8, 12, 12),
}


def zoo_example_input(
    name: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A random input of ``ZOO_INPUT_SHAPES[name]`` (drawn on the CPU from ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ZOO_INPUT_SHAPES[name], generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype)

"""Small models for the linear structures of issue 8 (part A), each written in the idiom of
the paper it comes from (from the papers' descriptions; no code of theirs), with the deploy
form its authors' own conversion produces as a plain twin.

* ``orepa``: OREPA (arXiv:2211.01842) -- the kernel is built in forward from a k×k
  parameter, a 1×1 (zero-padded to k×k) and a depthwise-then-pointwise product, then one
  ``F.conv2d`` and a BN. ``orepa_int`` computes its group sizes with ``int(t / g)`` on
  parameter sizes, as OREPA does (not traceable today).
* ``ecbsr``: ECBSR (Zhang et al., ACM MM 2021) -- 3×3 conv, 1×1 → 3×3, 1×1 → Sobel-x /
  Sobel-y / Laplacian (``scale * mask`` with ``F.conv2d(..., groups=C)``), identity; the
  1×1's output padded with its bias.
* ``dbb_identity``: DBB (arXiv:2103.13425) with its identity-initialised 1×1 in the 1×1→k×k
  branch (``F.conv2d(x, weight + id_tensor)``) and the 1×1 → avg-pool branch.
* ``acnet_crop``: ACNet (arXiv:1908.03930) with padding < k//2: the 1×k / k×1 branches read
  a crop of the input.
* ``vanillanet``: VanillaNet (arXiv:2305.12972) at its deploy annealing value: conv-BN,
  ``leaky_relu(x, act_learn)`` with ``act_learn = 1``, conv-BN.
* ``repvit_head``: RepViT (arXiv:2307.09283) / LeViT classifier: BN→Linear head and
  distillation head, averaged.
* ``deconv_decoder``: a decoder of ConvTranspose2d-BN-ReLU stages (groups, output_padding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reparam.testing._common import randomize_norms, seeded

__all__ = ["LINEAR_ZOO", "LINEAR_ZOO_INPUTS", "LINEAR_ZOO_PLAIN", "linear_zoo_input"]


def _finish(model: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    randomize_norms(model, torch.Generator().manual_seed(seed + 104729))
    return model.to(dtype=dtype).eval()


# ------------------------------------------------------------------------------ OREPA


class OREPAConv(nn.Module):
    """Online re-parameterized conv: several parameter tensors, one kernel, one conv."""

    def __init__(self, cin, cout, k, stride=1, groups=1, use_int=False, deploy=False):
        super().__init__()
        self.stride, self.padding, self.groups, self.k = stride, k // 2, groups, k
        self.use_int = use_int
        if deploy:
            self.orepa_reparam = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)
            return
        self.in_per_group = cin // groups  # a Python int: traceable
        self.weight_origin = nn.Parameter(torch.randn(cout, cin // groups, k, k) * 0.2)
        self.weight_1x1 = nn.Parameter(torch.randn(cout, cin // groups, 1, 1) * 0.2)
        self.weight_dw = nn.Parameter(torch.randn(cin, 1, k, k) * 0.2)
        self.weight_pw = nn.Parameter(torch.randn(cout, cin // groups) * 0.2)
        self.vector = nn.Parameter(torch.rand(3) + 0.5)  # per-branch scaling
        self.bn = nn.BatchNorm2d(cout)

    def weight_gen(self):
        origin = self.weight_origin * self.vector[0]
        one = F.pad(self.weight_1x1, [self.k // 2] * 4) * self.vector[1]
        if self.use_int:  # OREPA's style: group sizes from the parameter's shape
            t = int(self.weight_dw.size(0) / self.groups)
        else:
            t = self.in_per_group
        dw = self.weight_dw.reshape(self.groups, t, self.k, self.k)
        pw = self.weight_pw.reshape(self.groups, -1, t)
        # depthwise k×k then pointwise 1×1: W[o, i] = pw[o, i] * dw[i], group by group
        dw_pw = torch.einsum("goi,gihw->goihw", pw, dw).reshape(origin.shape)
        return origin + one + dw_pw * self.vector[2]

    def forward(self, x):
        if hasattr(self, "orepa_reparam"):
            return self.orepa_reparam(x)
        y = F.conv2d(x, self.weight_gen(), None, self.stride, self.padding, 1, self.groups)
        return self.bn(y)


class OREPANet(nn.Module):
    def __init__(self, use_int=False, deploy=False):
        super().__init__()
        cfg = [(3, 8, 1, 1), (8, 8, 2, 8), (8, 16, 1, 1)]
        layers = []
        for cin, cout, s, g in cfg:
            layers += [OREPAConv(cin, cout, 3, s, g, use_int, deploy), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


# ------------------------------------------------------------------------------ ECBSR


def _edge_masks(kind: str, channels: int) -> torch.Tensor:
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    kernel = {"sobelx": sobel, "sobely": sobel.t(), "laplacian": lap}[kind]
    return kernel.expand(channels, 1, 3, 3).clone()


class SeqConv3x3(nn.Module):
    """ECBSR's sequential branch: 1×1 conv, its output padded with its own bias, then a
    3×3 conv (learned, or a fixed edge mask times a learned per-channel scale)."""

    def __init__(self, kind, cin, cout, multiplier=2):
        super().__init__()
        self.kind = kind
        mid = cout * multiplier if kind == "conv1x1-conv3x3" else cout
        self.k0 = nn.Parameter(torch.randn(mid, cin, 1, 1) * 0.3)
        self.b0 = nn.Parameter(torch.randn(mid) * 0.1)
        if kind == "conv1x1-conv3x3":
            self.k1 = nn.Parameter(torch.randn(cout, mid, 3, 3) * 0.1)
        else:
            self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 1e-3 + 1.0)
            self.register_buffer("mask", _edge_masks(kind, cout))
        self.b1 = nn.Parameter(torch.randn(cout) * 0.1)
        self.groups = 1 if kind == "conv1x1-conv3x3" else cout

    def forward(self, x):
        y0 = F.conv2d(x, self.k0, self.b0, stride=1)
        b0 = self.b0.view(1, -1, 1, 1)
        y0 = F.pad(y0 - b0, (1, 1, 1, 1), "constant", 0) + b0
        weight = self.k1 if self.kind == "conv1x1-conv3x3" else self.scale * self.mask
        return F.conv2d(y0, weight, self.b1, stride=1, groups=self.groups)


class ECB(nn.Module):
    def __init__(self, cin, cout, deploy=False):
        super().__init__()
        if deploy:
            self.rep = nn.Conv2d(cin, cout, 3, padding=1)
            return
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.branches = nn.ModuleList(
            SeqConv3x3(k, cin, cout) for k in ("conv1x1-conv3x3", "sobelx", "sobely", "laplacian")
        )
        self.with_idt = cin == cout

    def forward(self, x):
        if hasattr(self, "rep"):
            return F.prelu(self.rep(x), torch.full((1,), 0.25, dtype=x.dtype))
        y = self.conv3x3(x)
        for branch in self.branches:
            y = y + branch(x)
        if self.with_idt:
            y += x
        return F.prelu(y, torch.full((1,), 0.25, dtype=x.dtype))


class ECBSRNet(nn.Module):
    def __init__(self, deploy=False):
        super().__init__()
        self.head = ECB(3, 8, deploy)
        self.body = nn.Sequential(ECB(8, 8, deploy), ECB(8, 8, deploy))
        self.tail = ECB(8, 12, deploy)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return self.up(self.tail(self.body(self.head(x))))


# ------------------------------------------------------------------------------ DBB


class IdentityBasedConv1x1(nn.Conv2d):
    """DBB's 1×1 that starts as the identity: a weight plus a fixed identity buffer."""

    def __init__(self, channels, groups=1):
        super().__init__(channels, channels, 1, groups=groups, bias=False)
        per_group = channels // groups
        ident = torch.zeros(channels, per_group, 1, 1)
        for i in range(channels):
            ident[i, i % per_group, 0, 0] = 1
        self.register_buffer("id_tensor", ident)
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, x):
        return F.conv2d(x, self.weight + self.id_tensor, None, 1, 0, 1, self.groups)


class _BNAndPad(nn.Module):
    def __init__(self, channels, pad):
        super().__init__()
        self.bn, self.pad = nn.BatchNorm2d(channels), pad

    def forward(self, x):
        out = self.bn(x)
        fill = self.bn.bias - self.bn.running_mean * self.bn.weight / torch.sqrt(
            self.bn.running_var + self.bn.eps
        )
        fill = fill.view(1, -1, 1, 1)
        return F.pad(out - fill, [self.pad] * 4) + fill


class DBBIdentityBlock(nn.Module):
    def __init__(self, c, k=3, groups=1, deploy=False):
        super().__init__()
        if deploy:
            self.dbb_reparam = nn.Conv2d(c, c, k, 1, k // 2, groups=groups)
            return
        self.dbb_origin = nn.Sequential(
            nn.Conv2d(c, c, k, 1, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c)
        )
        self.dbb_avg = nn.Sequential()
        self.dbb_avg.add_module("conv", nn.Conv2d(c, c, 1, groups=groups, bias=False))
        self.dbb_avg.add_module("bn", _BNAndPad(c, k // 2))
        self.dbb_avg.add_module("avg", nn.AvgPool2d(k, 1, 0))
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(c))
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module("idconv1", IdentityBasedConv1x1(c, groups))
        self.dbb_1x1_kxk.add_module("bn1", _BNAndPad(c, k // 2))
        self.dbb_1x1_kxk.add_module("conv2", nn.Conv2d(c, c, k, groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(c))

    def forward(self, x):
        if hasattr(self, "dbb_reparam"):
            return F.relu(self.dbb_reparam(x))
        out = self.dbb_origin(x)
        out += self.dbb_avg(x)
        out += self.dbb_1x1_kxk(x)
        return F.relu(out)


class DBBIdentityNet(nn.Module):
    def __init__(self, deploy=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(
            DBBIdentityBlock(8, 3, 1, deploy), DBBIdentityBlock(8, 5, 2, deploy)
        )

    def forward(self, x):
        return self.blocks(self.stem(x))


# ------------------------------------------------------------------------------ ACNet


class CropLayer(nn.Module):
    """ACNet's crop: remove ``rows`` / ``cols`` pixels from each border (negative padding)."""

    def __init__(self, rows, cols):
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x):
        if self.rows and self.cols:
            return x[:, :, self.rows : -self.rows, self.cols : -self.cols]
        if self.rows:
            return x[:, :, self.rows : -self.rows, :]
        return x[:, :, :, self.cols : -self.cols]


class ACBlockCrop(nn.Module):
    def __init__(self, cin, cout, k, padding, deploy=False):
        super().__init__()
        if deploy:
            self.fused = nn.Conv2d(cin, cout, k, 1, padding)
            return
        offset = k // 2 - padding
        self.square = nn.Conv2d(cin, cout, k, 1, padding, bias=False)
        self.square_bn = nn.BatchNorm2d(cout)
        self.ver_crop, self.hor_crop = CropLayer(0, offset), CropLayer(offset, 0)
        self.ver_conv = nn.Conv2d(cin, cout, (k, 1), 1, (padding, 0), bias=False)
        self.hor_conv = nn.Conv2d(cin, cout, (1, k), 1, (0, padding), bias=False)
        self.ver_bn, self.hor_bn = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x):
        if hasattr(self, "fused"):
            return self.fused(x)
        square = self.square_bn(self.square(x))
        vertical = self.ver_bn(self.ver_conv(self.ver_crop(x)))
        horizontal = self.hor_bn(self.hor_conv(self.hor_crop(x)))
        return square + vertical + horizontal


class ACNetCrop(nn.Module):
    def __init__(self, deploy=False):
        super().__init__()
        self.features = nn.Sequential(
            ACBlockCrop(3, 8, 3, 0, deploy), nn.ReLU(), ACBlockCrop(8, 8, 5, 1, deploy)
        )

    def forward(self, x):
        return self.features(x)


# ------------------------------------------------------------------------------ VanillaNet


class VanillaBlock(nn.Module):
    """VanillaNet's block at the end of its activation annealing (``act_learn = 1``)."""

    def __init__(self, cin, cout, deploy=False):
        super().__init__()
        self.deploy = deploy
        self.act_learn = 1.0
        if deploy:
            self.conv = nn.Conv2d(cin, cout, 1)
            return
        self.conv1 = nn.Sequential(nn.Conv2d(cin, cin, 1), nn.BatchNorm2d(cin, eps=1e-6))
        self.conv2 = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout, eps=1e-6))

    def forward(self, x):
        if self.deploy:
            return F.relu(self.conv(x))
        x = self.conv1(x)
        x = F.leaky_relu(x, self.act_learn)
        x = self.conv2(x)
        return F.relu(x)


class VanillaNetSmall(nn.Module):
    def __init__(self, deploy=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.stages = nn.Sequential(VanillaBlock(8, 16, deploy), VanillaBlock(16, 16, deploy))

    def forward(self, x):
        return self.stages(self.stem(x))


# ------------------------------------------------------------------------------ RepViT head


class BNLinear(nn.Sequential):
    def __init__(self, a, b):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(a))
        self.add_module("l", nn.Linear(a, b))


class ClassifierWithDistillation(nn.Module):
    def __init__(self, dim=16, classes=10, deploy=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, dim, 3, 2, 1), nn.ReLU())
        if deploy:
            self.head = nn.Linear(dim, classes)
            return
        self.head = BNLinear(dim, classes)
        self.head_dist = BNLinear(dim, classes)

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        if not hasattr(self, "head_dist"):
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2


# ------------------------------------------------------------------------------ decoder


class DeconvDecoder(nn.Module):
    def __init__(self, deploy=False):
        super().__init__()
        cfg = [(16, 8, 1), (8, 8, 2), (8, 4, 1)]
        layers = []
        for cin, cout, g in cfg:
            layers.append(
                nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1, groups=g, bias=deploy)
            )
            if not deploy:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
        self.up = nn.Sequential(*layers)

    def forward(self, x):
        return self.up(x)


# ------------------------------------------------------------------------------ registry


def _builder(cls: type[nn.Module], **kw) -> Callable[..., nn.Module]:
    def make(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
        with seeded(seed):
            model = cls(**kw)
        return _finish(model, seed, dtype)

    make.__name__ = f"make_{cls.__name__}"
    return make


#: name -> training-form builder ``(seed=0, dtype=torch.float64) -> nn.Module``.
LINEAR_ZOO: dict[str, Callable[..., nn.Module]] = {
    "orepa": _builder(OREPANet),
    "orepa_int": _builder(OREPANet, use_int=True),
    "ecbsr": _builder(ECBSRNet),
    "dbb_identity": _builder(DBBIdentityNet),
    "acnet_crop": _builder(ACNetCrop),
    "vanillanet": _builder(VanillaNetSmall),
    "repvit_head": _builder(ClassifierWithDistillation),
    "deconv_decoder": _builder(DeconvDecoder),
}

#: name -> deploy form (what the paper's own conversion leaves); random weights.
LINEAR_ZOO_PLAIN: dict[str, Callable[..., nn.Module]] = {
    "orepa": _builder(OREPANet, deploy=True),
    "orepa_int": _builder(OREPANet, deploy=True),
    "ecbsr": _builder(ECBSRNet, deploy=True),
    "dbb_identity": _builder(DBBIdentityNet, deploy=True),
    "acnet_crop": _builder(ACNetCrop, deploy=True),
    "vanillanet": _builder(VanillaNetSmall, deploy=True),
    "repvit_head": _builder(ClassifierWithDistillation, deploy=True),
    "deconv_decoder": _builder(DeconvDecoder, deploy=True),
}

LINEAR_ZOO_INPUTS: dict[str, tuple[int, ...]] = {
    "orepa": (2, 3, 12, 12),
    "orepa_int": (2, 3, 12, 12),
    "ecbsr": (2, 3, 10, 9),
    "dbb_identity": (2, 3, 11, 10),
    "acnet_crop": (2, 3, 13, 12),
    "vanillanet": (2, 3, 16, 16),
    "repvit_head": (3, 3, 8, 8),
    "deconv_decoder": (2, 16, 3, 4),
}


def linear_zoo_input(name: str, seed: int = 0, shape: tuple[int, ...] | None = None):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape or LINEAR_ZOO_INPUTS[name], generator=g, dtype=torch.float64)

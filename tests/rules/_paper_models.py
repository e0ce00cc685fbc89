"""Small blocks written in the style of the papers whose structures the issue-8 rules merge
(written from the papers' descriptions; no code copied), with each paper's own deploy-time
op counts (convs, norms, linears) for comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def op_counts(model: nn.Module) -> tuple[int, int, int]:
    """(convs, norms, linears) a forward of ``model`` can run."""
    convs = sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    return convs, norms, linears


# -- UniRepLKNet (arXiv:2311.15599): FFN on channels-last, BN after the layout change ----------
class ToChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class UniRepLKNetStyleBlock(nn.Module):
    """Depthwise conv + BN, then an FFN whose second linear is followed by a permute back to
    NCHW and a BatchNorm2d; residual. The authors' deploy: dwconv, 2 linears, no norm."""

    PAPER_DEPLOY = (1, 0, 2)

    def __init__(self, dim: int = 8, kernel: int = 5, ratio: int = 2) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Sequential(ToChannelsLast(), nn.Linear(dim, dim * ratio))
        self.act = nn.GELU()
        self.pwconv2 = nn.Sequential(nn.Linear(dim * ratio, dim, bias=False), ToChannelsFirst(),
                                     nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x))
        return x + self.pwconv2(self.act(self.pwconv1(y)))


class ConvFlattenNormHead(nn.Module):
    """A conv head on a pooled 1×1 map, flattened, then BatchNorm1d (and the refusal: a
    BatchNorm1d over C·h·w features of a larger map). Hand conversion: conv, linear, no norm."""

    PAPER_DEPLOY = (1, 0, 1)

    def __init__(self, c: int = 6, hidden: int = 8, classes: int = 3, positions: bool = False):
        super().__init__()
        self.positions = positions
        self.pool = nn.AdaptiveAvgPool2d(2 if positions else 1)
        self.conv = nn.Conv2d(c, hidden, 1)
        self.bn = nn.BatchNorm1d(hidden * (4 if positions else 1))
        self.fc = nn.Linear(hidden * (4 if positions else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(self.pool(x)).flatten(1))))


# -- a shared norm: Inception-style heads, a pre-norm in front of q / k / v ---------------------
class InceptionStyleHead(nn.Module):
    """BN read by a 1×1 and an unpadded 3×3 branch (and optionally a gate or a residual)."""

    PAPER_DEPLOY = (2, 0, 0)

    def __init__(self, c: int = 4, reader: str = "none") -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.b1 = nn.Conv2d(c, 3, 1)
        self.b3 = nn.Conv2d(c, 5, 3, padding=1 if reader == "padded" else 0)
        self.reader = reader

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        a = self.b1(y)
        b = self.b3(y)
        if self.reader != "padded":
            a = a[:, :, 1:-1, 1:-1]
        out = torch.cat([a, b], 1)
        if self.reader == "gate":
            out = out * torch.sigmoid(y.mean(1, keepdim=True))[:, :, 1:-1, 1:-1]
        if self.reader == "residual":
            out = out + y[:, :1, 1:-1, 1:-1]
        return out


class BatchNormAttention(nn.Module):
    """Tokens (N, C, L) normalized by BatchNorm1d, transposed, then parallel q / k / v."""

    PAPER_DEPLOY = (0, 0, 3)

    def __init__(self, c: int = 6) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(c)
        self.q, self.k, self.v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(x).transpose(1, 2)
        attn = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), dim=-1)
        return attn @ self.v(t)


# -- RepNeXt (arXiv:2406.16004): serial 1×k → k×1 depthwise beside parallel k×k -------------
class RepNeXtStyleMediumConv(nn.Module):
    """A 7×7 depthwise conv beside 5×3 and 3×5 ones and two serial pairs (1×7 → 7×1 and 1×5
    → 5×1), all summed; the authors merge all of it into one 7×7 depthwise conv."""

    PAPER_DEPLOY = (1, 0, 0)

    def __init__(self, c: int = 4, stride: int = 1) -> None:
        super().__init__()
        dw = dict(in_channels=c, out_channels=c, groups=c)
        self.k77 = nn.Conv2d(kernel_size=7, stride=stride, padding=3, **dw)
        self.k53 = nn.Conv2d(kernel_size=(5, 3), stride=stride, padding=(2, 1), **dw)
        self.k35 = nn.Conv2d(kernel_size=(3, 5), stride=stride, padding=(1, 2), **dw)
        self.row7 = nn.Conv2d(kernel_size=(1, 7), stride=(1, stride), padding=(0, 3),
                              bias=False, **dw)
        self.col7 = nn.Conv2d(kernel_size=(7, 1), stride=(stride, 1), padding=(3, 0),
                              bias=False, **dw)
        self.row5 = nn.Conv2d(kernel_size=(1, 5), stride=(1, stride), padding=(0, 2),
                              bias=False, **dw)
        self.col5 = nn.Conv2d(kernel_size=(5, 1), stride=(stride, 1), padding=(2, 0),
                              bias=False, **dw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.k77(x) + self.k53(x) + self.k35(x)
        out += self.col7(self.row7(x))
        return out + self.col5(self.row5(x))


class RepNeXtStyleLargeConv(nn.Module):
    """A lone serial 1×11 → 11×1 depthwise pair; the authors keep it as two convs."""

    PAPER_DEPLOY = (2, 0, 0)

    def __init__(self, c: int = 4, bias: bool = True) -> None:
        super().__init__()
        self.pair = nn.Sequential(
            nn.Conv2d(c, c, (1, 11), padding=(0, 5), groups=c, bias=bias),
            nn.Conv2d(c, c, (11, 1), padding=(5, 0), groups=c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair(x)


# -- RepMLP (arXiv:2105.01883) and RepMLPNet (arXiv:2112.11081) --------------------------------
class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class RepMLPNetStyleBlock(nn.Module):
    """Locality Injection as RepMLPNet writes it: partitions by reshape + permute, a
    channel-shared grouped 1×1 ``fc3`` on ``S·h·w`` channels, its BN on the ``(-1, S, h, w)``
    view, channel-shared convs on ``partitions.reshape(-1, S, h, w)`` accumulated from 0 and
    added in the 6-D partition layout. The authors' deploy keeps only ``fc3``."""

    PAPER_DEPLOY = (1, 0, 0)

    def __init__(self, c: int = 4, h: int = 3, w: int = 3, s: int = 2,
                 ks: tuple[int, ...] = (1, 3), unpack_size: bool = False) -> None:
        super().__init__()
        self.C, self.h, self.w, self.S, self.ks = c, h, w, s, ks
        self.unpack_size = unpack_size
        self.fc3 = nn.Conv2d(s * h * w, s * h * w, 1, groups=s, bias=False)
        self.fc3_bn = nn.BatchNorm2d(s)
        for k in ks:
            setattr(self, f"repconv{k}", ConvBN(s, s, k, s))

    def partition(self, x: torch.Tensor, hp, wp) -> torch.Tensor:
        return x.reshape(-1, self.C, hp, self.h, wp, self.w).permute(0, 2, 4, 1, 3, 5)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hp, wp = inputs.size(2) // self.h, inputs.size(3) // self.w
        partitions = self.partition(inputs, hp, wp)
        out = self.fc3(partitions.reshape(-1, self.S * self.h * self.w, 1, 1))
        out = self.fc3_bn(out.reshape(-1, self.S, self.h, self.w))
        out = out.reshape(-1, hp, wp, self.S, self.h, self.w)
        conv_inputs = partitions.reshape(-1, self.S, self.h, self.w)
        conv_out = 0
        for k in self.ks:
            conv_out += getattr(self, f"repconv{k}")(conv_inputs)
        out += conv_out.view(-1, hp, wp, self.S, self.h, self.w)
        out = out.permute(0, 3, 1, 4, 2, 5)
        if self.unpack_size:  # the authors' own form (needs shape-aware capture)
            return out.reshape(*inputs.size())
        return out.reshape(-1, self.C, hp * self.h, wp * self.w)


class RepMLPResNetStyleUnit(nn.Module):
    """RepMLP's first form (RepMLP-ResNet): partitions of a C-channel map, a grouped 1×1 FC
    from C·h·w to O·h·w channels with a BatchNorm1d-like BN on its output channels, and
    C→O conv+BN branches on the partitions, summed on the (-1, O, h, w) view."""

    PAPER_DEPLOY = (1, 0, 0)

    def __init__(self, cin: int = 4, cout: int = 6, h: int = 2, w: int = 3, groups: int = 2,
                 ks: tuple[int, ...] = (1, 3), relu_branch: bool = False) -> None:
        super().__init__()
        self.C, self.O, self.h, self.w = cin, cout, h, w
        self.fc3 = nn.Conv2d(cin * h * w, cout * h * w, 1, groups=groups)
        self.fc3_bn = nn.BatchNorm2d(cout * h * w)
        self.convs = nn.ModuleList(ConvBN(cin, cout, k, groups) for k in ks)
        self.relu_branch = relu_branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        hp, wp = height // self.h, width // self.w
        p = x.reshape(n, self.C, hp, self.h, wp, self.w).permute(0, 2, 4, 1, 3, 5)
        p = p.reshape(-1, self.C, self.h, self.w)
        fc = self.fc3_bn(self.fc3(p.reshape(-1, self.C * self.h * self.w, 1, 1)))
        y = fc.reshape(-1, self.O, self.h, self.w)
        for i, conv in enumerate(self.convs):
            y = y + (conv(torch.relu(p)) if self.relu_branch and i == 0 else conv(p))
        y = y.reshape(n, hp, wp, self.O, self.h, self.w).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(n, self.O, height, width)


class UnfoldPartitionMLP(nn.Module):
    """Partitions by ``F.unfold`` (stride = kernel), an ``nn.Linear`` FC, a reflect-padded
    conv + BN and a scaled identity on the same partitions, back with ``F.fold``."""

    PAPER_DEPLOY = (0, 0, 1)

    def __init__(self, c: int = 3, h: int = 2, w: int = 3) -> None:
        super().__init__()
        self.c, self.h, self.w = c, h, w
        self.fc = nn.Linear(c * h * w, c * h * w)
        self.conv = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        rows = F.unfold(x, (self.h, self.w), stride=(self.h, self.w)).transpose(1, 2)
        rows = rows.reshape(-1, self.c * self.h * self.w)
        parts = rows.view(-1, self.c, self.h, self.w)
        y = self.fc(rows) + self.bn(self.conv(parts)).flatten(1) + 0.5 * rows
        cols = y.reshape(x.shape[0], -1, self.c * self.h * self.w).transpose(1, 2)
        return F.fold(cols, (height, width), (self.h, self.w), stride=(self.h, self.w))

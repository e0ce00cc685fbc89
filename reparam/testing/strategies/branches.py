"""Branch blocks: one input, several parallel branches summed (:func:`branch_blocks`), written
in varying user styles (RepVGG, ACNet, DBB, MobileOne, RepLKNet / UniRepLKNet-like sets).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

from reparam.testing._common import seeded
from reparam.testing.strategies.case import (
    _AVG,
    _CONV,
    MAX_BATCH,
    MAX_CHANNELS,
    SUM_STYLES,
    Case,
    DeviceLike,
    Shape,
    _fmt,
    _make_case,
    _seeds,
    _tup,
)
from reparam.testing.strategies.convs import _draw_spatial
from reparam.testing.strategies.modules import _BLOCK_CLASSES, _BNAndPad, _Concat, _ConvBN, _Scale
from reparam.testing.strategies.norms import _WRAP_STYLES, _draw_bn, _wrap_conv_bn

# --------------------------------------------------------------------------------------------
# Branch blocks
# --------------------------------------------------------------------------------------------

_CONV_KINDS = ("kxk", "asym", "dilated", "seq_1x1_kxk", "seq_dbb_pad", "seq_1x1_avg", "concat")
_IDENTITY_KINDS = ("identity", "bn", "scale", "avgpool")
#: Every branch kind :func:`branch_blocks` may draw.
BRANCH_KINDS: tuple[str, ...] = _CONV_KINDS + _IDENTITY_KINDS


@dataclass
class _DrawnBlock:
    module: nn.Module
    out_channels: int
    out_spatial: Shape
    description: str
    tags: list[str]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _draw_block(
    draw: st.DrawFn,
    *,
    dims: int,
    in_channels: int,
    spatial: Shape,
    padding_modes: Sequence[str],
    strides: Sequence[int],
    max_branches: int,
    allow_activation: bool,
    kinds: Sequence[str],
) -> _DrawnBlock:
    """Draw and build (under a drawn seed) one branch block."""
    cin = in_channels
    mode = draw(st.sampled_from(list(padding_modes)))
    stride = draw(st.sampled_from(list(strides)))
    s = _tup(stride, dims)
    groups = draw(st.sampled_from(_divisors(cin)))
    if stride == 1 and draw(st.booleans()):
        cout = cin
    else:
        cout = groups * draw(st.integers(1, MAX_CHANNELS // groups))
    square = cin == cout

    # Largest padding each spatial dim tolerates under this padding mode.
    if mode == "reflect":
        max_pad = min(spatial) - 1
    elif mode == "circular":
        max_pad = min(spatial)
    else:
        max_pad = 10**9
    big = (1, 3, 5, 7) if dims < 3 else (1, 3, 5)
    kernels = [k for k in big if k // 2 <= max_pad]
    main_k = draw(st.sampled_from(kernels))
    dilated_opts = [
        (k, d)
        for k in (3, 5)
        for d in (2, 3)
        if d * (k - 1) // 2 <= min(max_pad, 6 if dims < 3 else 2)
    ]

    available = [k for k in kinds if k in BRANCH_KINDS]
    conv_kinds = [k for k in available if k in _CONV_KINDS]
    if "asym" in conv_kinds and (dims == 1 or main_k < 3):
        conv_kinds.remove("asym")
    if "dilated" in conv_kinds and not dilated_opts:
        conv_kinds.remove("dilated")
    if mode != "zeros":
        conv_kinds = [k for k in conv_kinds if k not in ("seq_dbb_pad", "seq_1x1_avg")]
    if "concat" in conv_kinds and (groups != 1 or cout < 2):
        conv_kinds.remove("concat")
    if not conv_kinds:
        conv_kinds = ["kxk"]
    # identity / BN / scale need in == out and stride 1; avgpool needs in == out and zeros.
    id_kinds = [
        k
        for k in available
        if k in _IDENTITY_KINDS and square and (stride == 1 if k != "avgpool" else mode == "zeros")
    ]
    if dims == 3 and min(spatial) < 3:  # AvgPool3d rejects inputs smaller than its kernel
        id_kinds = [k for k in id_kinds if k != "avgpool"]

    first = draw(st.sampled_from(conv_kinds))
    rest = draw(
        st.lists(
            st.sampled_from(conv_kinds + id_kinds), min_size=0, max_size=max(0, max_branches - 1)
        )
    )
    branch_kinds = [first, *rest]

    style = draw(st.sampled_from(list(SUM_STYLES)))
    container = draw(st.sampled_from(["modulelist", "attributes"]))
    name_prefix = draw(st.sampled_from(["branch", "rbr_", "path_", "b"]))
    seed = draw(_seeds())
    tags: list[str] = [
        f"style:{style}",
        f"container:{container}",
        f"padding_mode:{mode}",
        f"stride:{stride}",
    ]
    descs: list[str] = []
    named: list[tuple[str, nn.Module]] = []
    inline_identity = False
    gamma: torch.Tensor | None = None
    Conv, Avg = _CONV[dims], _AVG[dims]

    def conv(
        ci: int,
        co: int,
        k: Shape | int,
        *,
        stride: Shape | int = s,
        padding: Shape | int = 0,
        dilation: int = 1,
        g: int = groups,
        bias: bool | None = None,
    ) -> nn.Module:
        if bias is None:
            bias = draw(st.booleans())
        return Conv(
            ci,
            co,
            k,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=g,
            bias=bias,
            padding_mode=mode,
        )

    def bn(c: int) -> nn.Module:
        return _draw_bn(draw, dims, c)()

    def conv_bn_(c: nn.Module, b: nn.Module) -> nn.Module:
        return _wrap_conv_bn(c, b, draw(st.sampled_from(_WRAP_STYLES)))

    def maybe_sprinkle(m: nn.Module) -> nn.Module:
        extra = draw(st.sampled_from(["none", "none", "none", "dropout", "identity"]))
        if extra == "dropout":
            return nn.Sequential(m, nn.Dropout(p=0.25))
        if extra == "identity":
            return nn.Sequential(nn.Identity(), m)
        return m

    with seeded(seed):
        for i, kind in enumerate(branch_kinds):
            name = f"{name_prefix}{i}_{kind}"
            tags.append(kind)
            if kind == "kxk":
                k = draw(st.sampled_from(kernels))
                m = conv_bn_(conv(cin, cout, k, padding=k // 2), bn(cout))
                descs.append(f"conv{k}x{k}+BN")
            elif kind == "asym":
                n_axes = draw(st.integers(1, dims - 1))
                axes = draw(st.permutations(range(dims)))[:n_axes]
                ks = tuple(main_k if a in axes else 1 for a in range(dims))
                m = conv_bn_(conv(cin, cout, ks, padding=tuple(v // 2 for v in ks)), bn(cout))
                descs.append(f"conv{_fmt(ks)}+BN")
            elif kind == "dilated":
                k, d = draw(st.sampled_from(dilated_opts))
                m = conv_bn_(conv(cin, cout, k, padding=d * (k - 1) // 2, dilation=d), bn(cout))
                descs.append(f"dilated conv{k}x{k} d={d}+BN")
            elif kind == "seq_1x1_kxk":
                k = draw(st.sampled_from(kernels))
                mid = groups * draw(st.integers(1, MAX_CHANNELS // groups))
                first_conv = conv(cin, mid, 1, stride=1, bias=False)
                m = nn.Sequential(
                    first_conv, conv_bn_(conv(mid, cout, k, padding=k // 2), bn(cout))
                )
                descs.append(f"conv1x1({cin}->{mid}, no bias) -> conv{k}x{k}+BN")
            elif kind == "seq_dbb_pad":
                k = draw(st.sampled_from(kernels))
                mid = groups * draw(st.integers(1, MAX_CHANNELS // groups))
                m = nn.Sequential(
                    OrderedDict(
                        [
                            ("conv1", conv(cin, mid, 1, stride=1, bias=False)),
                            ("bn1", _BNAndPad(bn(mid), k // 2, dims)),
                            ("conv2", conv(mid, cout, k, padding=0)),
                            ("bn2", bn(cout)),
                        ]
                    )
                )
                descs.append(
                    f"conv1x1({cin}->{mid})+BN -> pad {k // 2} with BN(0) -> "
                    f"conv{k}x{k}(p=0)+BN (DBB)"
                )
            elif kind == "seq_1x1_avg":
                k = draw(st.sampled_from([v for v in kernels if v > 1] or [1]))
                m = nn.Sequential(
                    OrderedDict(
                        [
                            ("conv", conv(cin, cout, 1, stride=1, bias=False)),
                            ("bn", _BNAndPad(bn(cout), k // 2, dims)),
                            ("avg", Avg(k, stride=stride, padding=0)),
                            ("avgbn", bn(cout)),
                        ]
                    )
                )
                descs.append(f"conv1x1+BN -> pad with BN(0) -> avgpool{k}(p=0)+BN (DBB)")
            elif kind == "concat":
                n_parts = draw(st.integers(2, min(3, cout)))
                cuts = sorted(
                    draw(
                        st.sets(
                            st.integers(1, cout - 1), min_size=n_parts - 1, max_size=n_parts - 1
                        )
                    )
                )
                sizes = [b - a for a, b in zip([0, *cuts], [*cuts, cout], strict=True)]
                bn_after = draw(st.booleans())
                parts, pdesc = [], []
                for c in sizes:
                    k = draw(st.sampled_from(kernels))
                    pc = conv(cin, c, k, padding=k // 2)
                    parts.append(pc if bn_after else conv_bn_(pc, bn(c)))
                    pdesc.append(f"conv{k}x{k}->{c}" + ("" if bn_after else "+BN"))
                m = _Concat(parts, bn(cout) if bn_after else None)
                descs.append(f"cat[{', '.join(pdesc)}]" + ("+BN" if bn_after else ""))
            elif kind == "identity":
                if not inline_identity and draw(st.booleans()):
                    inline_identity = True
                    descs.append("x (inline)")
                    continue
                m = nn.Identity()
                descs.append("identity")
            elif kind == "bn":
                m = bn(cin)
                descs.append("BN (identity branch)")
            elif kind == "scale":
                g_shape = (cin,) + (1,) * dims
                gamma_init = torch.empty(g_shape).uniform_(0.5, 1.5) * torch.where(
                    torch.rand(g_shape) < 0.5, -1.0, 1.0
                )
                if gamma is None and draw(st.booleans()):
                    gamma = gamma_init
                    descs.append("x * gamma (inline parameter)")
                    continue
                m = _Scale(gamma_init)
                descs.append("x * gamma")
            elif kind == "avgpool":
                k = draw(st.sampled_from([3, 5] if dims < 3 else [3]))
                pool = Avg(k, stride=stride, padding=k // 2, count_include_pad=True)
                m = nn.Sequential(pool, bn(cin)) if draw(st.booleans()) else _ConvBN(pool, bn(cin))
                descs.append(f"avgpool{k}(p={k // 2}, count_include_pad)+BN")
            else:  # pragma: no cover - kinds are filtered above
                raise AssertionError(kind)
            if i > 0 or style != "iadd":
                m = maybe_sprinkle(m)
            named.append((name, m))

        if style != "iadd" and len(named) > 1:
            order = draw(st.permutations(range(len(named))))
            named = [named[j] for j in order]
        post_kind = "none"
        functional_relu = False
        post: nn.Module = nn.Identity()
        if allow_activation:
            post_kind = draw(
                st.sampled_from(["none", "relu", "relu_fn", "relu_dropout", "dropout", "identity"])
            )
            if post_kind == "relu":
                post = nn.ReLU()
            elif post_kind == "relu_fn":
                functional_relu = True
            elif post_kind == "relu_dropout":
                post = nn.Sequential(nn.ReLU(), nn.Dropout(0.1))
            elif post_kind == "dropout":
                post = nn.Dropout(0.1)
        else:
            post_kind = draw(st.sampled_from(["none", "dropout", "identity"]))
            if post_kind == "dropout":
                post = nn.Dropout(0.1)
        module = _BLOCK_CLASSES[style](
            named,
            container=container,
            inline_identity=inline_identity,
            gamma=gamma,
            functional_relu=functional_relu,
            post=post,
        )
    if post_kind.startswith("relu"):
        tags.append("activation")
    out_spatial = tuple((n - 1) // stride + 1 for n in spatial)
    desc = (
        f"branch_block[{style}, {container}] {dims}-D in={cin} out={cout} g={groups} "
        f"s={stride} {mode}: "
        + " + ".join(descs)
        + ("" if post_kind == "none" else f" -> {post_kind}")
    )
    return _DrawnBlock(module, cout, out_spatial, desc, tags)


@st.composite
def branch_blocks(
    draw: st.DrawFn,
    dims: int = 2,
    *,
    dtype: torch.dtype = torch.float64,
    device: DeviceLike = "cpu",
    max_branches: int = 6,
    padding_modes: Sequence[str] = ("zeros",),
    strides: Sequence[int] = (1, 1, 2),
    allow_activation: bool = True,
    kinds: Sequence[str] = BRANCH_KINDS,
) -> Case:
    """One input, several parallel branches summed: exactly mergeable into one conv (+act).

    Branch kinds (:data:`BRANCH_KINDS`, restrict with ``kinds``):

    * ``kxk``: centred kxk conv+BN for k in 1, 3, 5, 7 (may repeat, MobileOne-style);
    * ``asym``: 1xk / kx1 conv+BN (ACNet);
    * ``dilated``: dilated 3x3 / 5x5 conv+BN (UniRepLKNet);
    * ``seq_1x1_kxk``: 1x1 conv (no bias) -> kxk conv+BN;
    * ``seq_dbb_pad``: 1x1 conv+BN -> pad with the BN's zero-response -> kxk conv (p=0)+BN
      (DBB's BN-and-pad, zero padding only);
    * ``seq_1x1_avg``: DBB's avg path, 1x1 conv+BN-and-pad -> avgpool (p=0) -> BN;
    * ``concat``: same-input convs concatenated on channels (groups 1 only);
    * identity-like, only when in == out channels and stride 1: ``identity`` (``nn.Identity``
      or ``x`` in forward), ``bn`` (BN-only, RepVGG), ``scale`` (``x * gamma``, gamma an
      ``nn.Parameter`` of shape ``(C, 1, ..)``, as a module or inline); ``avgpool``
      (``AvgPoolNd(k, stride, k//2, count_include_pad=True)``+BN, in == out, any stride).

    At least one conv branch is always present. All branches share stride, groups and
    ``padding_mode`` (drawn from ``padding_modes``; non-zero modes drop the DBB pad/avg kinds
    and the identity-likes). The sum is written in one of :data:`SUM_STYLES` (``a + b``,
    ``torch.add``, ``out += b``, ``sum([...])``, ``functools.reduce(operator.add, ...)``),
    branches in an ``nn.ModuleList`` or as named attributes, conv+BN as ``Sequential`` or a
    custom ``conv``/``bn`` module, eval Dropout/Identity sprinkled in, and, if
    ``allow_activation``, an optional ReLU (module or ``F.relu``) after the sum.
    """
    cin = draw(st.integers(1, MAX_CHANNELS))
    spatial = _draw_spatial(draw, dims)
    batch = draw(st.integers(1, MAX_BATCH))
    block = _draw_block(
        draw,
        dims=dims,
        in_channels=cin,
        spatial=spatial,
        padding_modes=padding_modes,
        strides=strides,
        max_branches=max_branches,
        allow_activation=allow_activation,
        kinds=kinds,
    )
    seed = draw(_seeds())
    return _make_case(
        block.module,
        (batch, cin, *spatial),
        seed,
        dtype=dtype,
        device=device,
        description=block.description,
        output_shape=(batch, block.out_channels, *block.out_spatial),
        tags=("branch_block", *block.tags),
    )

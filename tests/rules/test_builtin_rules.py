"""Each built-in rule: graph before/after, rewrite count, numerical check, and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms
from reparam.rules.parallel_branches import MergeParallelBranches


def _run(model: nn.Module, x: torch.Tensor, **kw):
    model = randomize_batch_norms(model.double(), seed=3).eval().to(x.device)
    result = reparam.deploy_with_report(model, x, **kw)
    err = reparam.relative_error(model(x), result.model(x))
    assert err <= 1e-9, err
    return result


def _fired(result) -> dict[str, int]:
    return result.report.fired()


def _refused(result) -> list[str]:
    return [f"{o.rule}: {o.reason}" for o in result.report.refusals]


class Seq(nn.Sequential):
    pass


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_norm_any_rank_and_geometry(dims, device):
    conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1]
    bn = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][dims - 1]
    model = Seq(conv(6, 4, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect"),
                bn(4))
    x = torch.randn(2, 6, *([7] * dims), dtype=torch.float64, device=device)
    result = _run(model, x)
    assert _fired(result) == {"conv_norm": 1}
    assert not any(isinstance(m, bn) for m in result.model.modules())


def test_norm_without_running_stats_refused(device):
    model = Seq(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    model = model.double().to(device).eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=device)
    result = reparam.deploy_with_report(model, x)
    assert _fired(result) == {}
    assert any("no running statistics" in r for r in _refused(result))
    assert result.report.unfolded_norms


def test_conv_output_used_twice_refused(device):
    class TwoUses(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y), y

    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    result = _run(TwoUses(), x)
    assert "conv_norm" not in _fired(result)
    assert any("also used" in r for r in _refused(result))


def test_shared_conv_called_twice_not_corrupted(device):
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x).relu()

    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    result = _run(Reuse(), x)
    assert result.report.max_relative_error <= 1e-9


def test_linear_norm_needs_rank_2(device):
    model = Seq(nn.Linear(5, 4), nn.BatchNorm1d(4))
    x = torch.randn(3, 5, dtype=torch.float64, device=device)
    assert _fired(_run(model, x)) == {"linear_norm": 1}
    # BatchNorm1d on (N, C=4, L=4) after a linear: the norm acts on dim 1, not the features
    x3 = torch.randn(2, 4, 5, dtype=torch.float64, device=device)
    result = _run(Seq(nn.Linear(5, 4), nn.BatchNorm1d(4)), x3)
    assert "linear_norm" not in _fired(result)
    assert any("rank-3" in r for r in _refused(result))


def test_linear_flatten_norm_reshape_as(device):
    class LinearNorm(nn.Module):  # LeViT's LinearNorm
        def __init__(self):
            super().__init__()
            self.linear, self.bn = nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16)

        def forward(self, x):
            x = self.linear(x)
            return self.bn(x.flatten(0, 1)).reshape_as(x)

    x = torch.randn(2, 5, 8, dtype=torch.float64, device=device)
    assert _fired(_run(LinearNorm(), x)) == {"linear_norm": 1}


def test_norm_pool_flatten_linear_head(device):
    model = Seq(nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=device)
    assert _fired(_run(model, x)) == {"norm_linear": 1}
    model = Seq(nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 25, 3))  # repeats per position
    assert _fired(_run(model, x)) == {"norm_linear": 1}


def test_norm_conv_exact_only_without_zero_padding(device):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    assert _fired(_run(Seq(nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3, groups=2)), x)) == {
        "norm_conv": 1}
    assert _fired(_run(Seq(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1,
                                                          padding_mode="replicate")), x)) == {
        "norm_conv": 1}
    result = _run(Seq(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1)), x)
    assert "norm_conv" not in _fired(result)
    assert any("zero-pads" in r for r in _refused(result))


class Branches(nn.Module):
    def __init__(self, branches, identity=False):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.identity = identity

    def forward(self, x):
        out = sum(b(x) for b in self.branches)
        return out + x if self.identity else out


def cbn(cin, cout, k, stride=1, padding=None, dilation=1, groups=1, mode="zeros"):
    if padding is None:
        padding = tuple(dilation * (kk // 2) for kk in ((k,) * 2 if isinstance(k, int) else k))
    return Seq(nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False,
                         padding_mode=mode), nn.BatchNorm2d(cout))


@pytest.mark.parametrize("stride", [1, 2])
def test_repvgg_acnet_dilated_avgpool_merge(stride, device):
    c = 6
    branches = [cbn(c, c, 5, stride), cbn(c, c, 3, stride), cbn(c, c, (1, 5), stride),
                cbn(c, c, (3, 1), stride), cbn(c, c, 3, stride, dilation=2),
                Seq(nn.AvgPool2d(3, stride, 1), nn.BatchNorm2d(c))]
    x = torch.randn(2, c, 9, 9, dtype=torch.float64, device=device)
    result = _run(Branches(branches, identity=False), x)
    assert _fired(result)["parallel_branches"] == 1
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (5, 5)


def test_grouped_and_identity(device):
    c = 8
    branches = [cbn(c, c, 3, groups=2), cbn(c, c, 1, groups=4)]
    x = torch.randn(2, c, 7, 7, dtype=torch.float64, device=device)
    result = _run(Branches(branches, identity=True), x)
    conv = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv) == 1 and conv[0].groups == 2
    # the coarser groups of a 1×1 would make the 3×3 denser: declined as slower
    result = _run(Branches([cbn(c, c, 3, groups=4), cbn(c, c, 1, groups=2)], True), x)
    assert any("slower" in r for r in _refused(result))


class _ScaledIdentity(nn.Module):
    """A layer-scale identity branch, ``x * gamma``, with gamma of a given shape."""

    def __init__(self, channels: int, shape: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList([cbn(channels, channels, 3), cbn(channels, channels, 1)])
        self.gamma = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        out = x * self.gamma
        for conv in self.convs:
            out += conv(x)
        return out


@pytest.mark.parametrize("channels,shape,convs", [
    (1, (1, 1, 1), 1),  # one channel: (C, 1, 1) and (1, C, 1) are the same tensor
    (1, (1, 1, 1, 1), 1),
    (4, (4, 1, 1), 1),
    (4, (1, 4, 1, 1), 1),
    (4, (1, 1, 1), 1),  # one factor for every channel
    (4, (1, 1, 1, 1, 1), 2),  # broadcasts the output up to rank 5: not a channel scale
])
def test_scaled_identity_branch_of_any_gamma_shape(channels, shape, convs, device):
    x = torch.randn(2, channels, 6, 6, dtype=torch.float64, device=device)
    model = _ScaledIdentity(channels, shape).double().to(device)
    result = _run(model, x)
    kept = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(kept) == convs, _refused(result)
    if convs > 1:
        assert any("does not broadcast" in r for r in _refused(result)), _refused(result)
    other = torch.randn(3, channels, 9, 5, dtype=torch.float64, device=device)
    assert reparam.relative_error(model(other), result.model(other)) <= 1e-9


@pytest.mark.parametrize("branches,reason", [
    (lambda: [cbn(4, 4, 3, mode="reflect"), cbn(4, 4, 5)], "modes"),
    (lambda: [cbn(4, 4, 3, dilation=3), cbn(4, 4, 3)], "slower"),
    (lambda: [cbn(16, 16, 3, groups=16), cbn(16, 16, 1)], "slower"),
    (lambda: [Seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False)), cbn(4, 4, 3)],
     "count_include_pad"),
])
def test_parallel_branch_refusals(branches, reason, device):
    blocks = branches()
    cin = blocks[-1][0].in_channels
    x = torch.randn(2, cin, 8, 8, dtype=torch.float64, device=device)
    result = _run(Branches(blocks), x)
    assert "parallel_branches" not in _fired(result)
    assert any(reason in r for r in _refused(result)), _refused(result)


def test_allow_slower_forces_the_merge(device):
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, device=device)
    result = _run(Branches([cbn(4, 4, 3, dilation=3), cbn(4, 4, 3)]), x, allow_slower=True)
    assert _fired(result)["parallel_branches"] == 1
    conv = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert conv[0].kernel_size == (7, 7)


def test_dilated_with_pointwise_stays_dilated(device):
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, device=device)
    result = _run(Branches([cbn(4, 4, 3, dilation=3), cbn(4, 4, 1)]), x)
    conv = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv) == 1 and conv[0].kernel_size == (3, 3) and conv[0].dilation == (3, 3)


def test_branch_nonlinear_before_sum_is_left_alone(device):
    class B(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = cbn(4, 4, 3), cbn(4, 4, 1)

        def forward(self, x):
            return self.a(x).relu() + self.b(x)

    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    assert "parallel_branches" not in _fired(_run(B(), x))


def test_sequential_1x1_kxk(device):
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64, device=device)
    model = Seq(nn.Conv2d(8, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1))
    assert _fired(_run(model, x)) == {"sequential_convs": 1}
    # unpadded k×k → k×k: on a 16×16 map the 5×5 costs more (25·12² = 3600 taps per channel
    # pair vs 9·(14² + 12²) = 3060)
    model = Seq(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    big = torch.randn(2, 8, 16, 16, dtype=torch.float64, device=device)
    assert any("slower" in r for r in _refused(_run(model, big)))
    assert _fired(_run(model, big, allow_slower=True)) == {"sequential_convs": 1}
    # on the 7×7 example the middle map (5×5) is bigger than the output (3×3): the one 5×5
    # conv is cheaper there, and the cost model judges at the example's shapes
    assert _fired(_run(model, x)) == {"sequential_convs": 1}
    result = _run(Seq(nn.Conv2d(8, 8, 1, bias=True), nn.Conv2d(8, 8, 3, padding=1)), x)
    assert any("bias" in r for r in _refused(result))
    result = _run(Seq(nn.Conv2d(8, 2, 1, bias=False), nn.Conv2d(2, 8, 3, padding=1)), x)
    assert any("slower" in r for r in _refused(result))


def test_concat_convs(device):
    class Cat(nn.Module):
        def __init__(self, k_b):
            super().__init__()
            self.a = nn.Conv2d(4, 3, 3, padding=1)
            self.b = nn.Conv2d(4, 5, k_b, padding=k_b // 2)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1)

    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    result = _run(Cat(3), x)
    assert _fired(result) == {"concat_convs": 1}
    assert sum(isinstance(m, nn.Conv2d) for m in result.model.modules()) == 1
    result = _run(Cat(1), x)  # the 1×1 padded to 3×3 would cost more
    assert any("slower" in r for r in _refused(result))
    assert _fired(_run(Cat(1), x, allow_slower=True)) == {"concat_convs": 1}


class _CatStyles(nn.Module):
    """The same stack written as other authors write it: keywords, a tuple, torch.concat."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self.a = nn.Conv2d(4, 3, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 3, padding=1)

    def forward(self, x):
        if self.style == "keywords":
            return torch.cat(tensors=[self.a(x), self.b(x)], dim=1)
        if self.style == "tuple":
            return torch.concat((self.a(x), self.b(x)), 1)
        if self.style == "other inputs":  # must refuse: b reads a different tensor
            return torch.cat([self.a(x), self.b(x.flip(-1))], dim=1)
        return torch.cat([self.a(x), self.b(x)], dim=2)  # along height: not a channel stack


@pytest.mark.parametrize("style", ["keywords", "tuple", "other inputs", "height"])
def test_concat_convs_in_other_styles(style):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    model = _CatStyles(style)
    if style == "height":  # a cat along height needs equal channels
        model.b = nn.Conv2d(4, 3, 3, padding=1)
    model = model.double().eval()
    result = _run(model, x)
    other = torch.randn(3, 4, 9, 5, dtype=torch.float64)
    assert reparam.relative_error(model(other), result.model(other)) <= 1e-9
    fired = _fired(result).get("concat_convs", 0)
    assert fired == (1 if style in ("keywords", "tuple") else 0)
    if style == "other inputs":
        assert any("different inputs" in r for r in _refused(result)), _refused(result)


class WrongBranches(MergeParallelBranches):
    """A deliberately wrong rule: scales the merged kernel."""

    name = "wrong_branches"

    def check(self, m, ctx):
        plan = super().check(m, ctx)
        if plan:
            with torch.no_grad():
                plan.module.weight.mul_(1.5)
        return plan


def test_verify_rolls_back_a_wrong_rule(device):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    model = Branches([cbn(4, 4, 3), cbn(4, 4, 1)])
    result = _run(model, x, rules=reparam.RuleRegistry([WrongBranches()]), verify=True)
    assert result.report.rolled_back and result.report.rewrites == []


def test_wrong_rule_without_verify_is_caught_by_the_final_check(device):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    model = randomize_batch_norms(Branches([cbn(4, 4, 3), cbn(4, 4, 1)]).double()).eval()
    with pytest.raises(reparam.ReparamError, match="differs"):
        reparam.deploy(model.to(device), x, rules=reparam.RuleRegistry([WrongBranches()]))


def test_functional_batch_norm_subclass(device):
    class BNAct(nn.BatchNorm2d):  # overrides forward, like timm's BatchNormAct2d
        def forward(self, x):
            x = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                         self.bias, False, 0.0, self.eps)
            return torch.relu(x)

    model = Seq(nn.Conv2d(3, 4, 3, padding=1), BNAct(4))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=device)
    assert _fired(_run(model, x)) == {"conv_norm": 1}


def test_untraceable_top_level_still_deploys_children(device):
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Branches([cbn(4, 4, 3), cbn(4, 4, 1)], identity=True)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.block(x)
            return -self.block(x)

    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device)
    result = _run(Dynamic(), x)
    assert _fired(result)["parallel_branches"] == 1
    assert any(path == "" for path, _ in result.report.skipped_scopes)


def test_half_precision(device):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    model = randomize_batch_norms(Branches([cbn(4, 4, 3), cbn(4, 4, 1)], identity=True)).eval()
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(2, 4, 6, 6, device=device, dtype=dtype)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired()["parallel_branches"] == 1
    # max-norm relative error within the dtype's tolerance (bf16 1.6e-2, fp16 1e-3)
    reparam.assert_equivalent(model, result.model, x)


class BNAndPad(nn.Module):
    """DBB's BN-and-pad: pad the BN output with BN(0), written traceably."""

    def __init__(self, c, pad):
        super().__init__()
        self.bn, self.pad = nn.BatchNorm2d(c), pad

    def forward(self, x):
        out = self.bn(x)
        fill = (self.bn.bias - self.bn.running_mean * self.bn.weight
                / torch.sqrt(self.bn.running_var + self.bn.eps)).view(1, -1, 1, 1)
        return nn.functional.pad(out - fill, [self.pad] * 4) + fill


def test_dbb_bn_and_pad_branch_merges(device):
    c = 4
    branch = Seq(nn.Conv2d(c, c, 1, bias=False), BNAndPad(c, 1), nn.Conv2d(c, c, 3, bias=False),
                 nn.BatchNorm2d(c))
    x = torch.randn(2, c, 6, 6, dtype=torch.float64, device=device)
    result = _run(Branches([branch, cbn(c, c, 3)]), x)
    fired = _fired(result)
    assert fired["pad_through_pointwise"] == 1 and fired["sequential_convs"] == 1
    assert fired["pad_into_conv"] == 1 and fired["parallel_branches"] == 1
    assert sum(isinstance(m, nn.Conv2d) for m in result.model.modules()) == 1


def test_pad_with_other_value_is_refused(device):
    class WrongFill(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 3)
            self.fill = nn.Parameter(torch.ones(1, 3, 1, 1))

        def forward(self, x):
            return self.conv2(nn.functional.pad(self.conv(x) - self.fill, [1, 1, 1, 1])
                              + self.fill)

    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, device=device)
    result = _run(WrongFill(), x)
    assert "pad_through_pointwise" not in _fired(result)
    assert any("differs from the conv's bias" in r for r in _refused(result))


class _FunctionalBNAndPad(nn.Module):
    """BN-and-pad in another author's style: ``torch.sub`` / ``torch.add`` with the fill
    first, and an optional ``alpha`` (``alpha=2`` adds the fill twice: not a bias pad)."""

    def __init__(self, c, alpha):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3)
        self.alpha = alpha

    def forward(self, x):
        y = self.conv(x)
        fill = self.conv.bias.reshape(1, -1, 1, 1)
        padded = nn.functional.pad(torch.sub(y, fill), (1, 1, 1, 1), mode="constant", value=0.0)
        return self.conv2(torch.add(fill, padded, alpha=self.alpha))


@pytest.mark.parametrize("alpha", [1, 2])
def test_bias_pad_in_functional_style(alpha):
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    model = _FunctionalBNAndPad(3, alpha)
    result = _run(model, x)
    other = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    assert reparam.relative_error(model.double()(other), result.model(other)) <= 1e-9
    assert ("pad_through_pointwise" in _fired(result)) == (alpha == 1), _fired(result)


def test_pad_move_needs_a_conv_to_compose_with(device):
    c = 3
    model = Seq(nn.Conv2d(c, c, 1, bias=False), BNAndPad(c, 1), nn.AvgPool2d(3))
    x = torch.randn(1, c, 4, 4, dtype=torch.float64, device=device)
    result = _run(model, x)
    assert "pad_through_pointwise" not in _fired(result)
    assert any("no conv follows" in r for r in _refused(result))


def test_pad_into_conv(device):
    class Padded(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode)

        def forward(self, x):
            return self.conv(nn.functional.pad(x, [1, 2, 1, 2]))

    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    result = _run(Padded("zeros"), x)
    assert _fired(result) == {}  # total padding (2, 3) is asymmetric at stride 1: kept
    assert any("asymmetric" in r for r in _refused(result))

    class Symmetric(Padded):
        def forward(self, x):
            return self.conv(nn.functional.pad(x, [2, 2, 1, 1]))

    result = _run(Symmetric("zeros"), x)
    assert _fired(result) == {"pad_into_conv": 1}
    assert result.model.conv.padding == (2, 3)
    result = _run(Symmetric("reflect"), x)
    assert any("mode 'reflect'" in r for r in _refused(result))

"""reparam.cost: one multiply-add model for the rules' decisions and deploy's final check.

Hand-counted cases, the false alarm the slow property found (issue 11: "deployed model needs
more FLOPs (80) than the original (78)" on a DBB-style stack over a 1×1 map), and a property:
on random block stacks the multiply-adds each rewrite says it saved add up to what the whole
model saved, so a rule's decision and the closing check cannot disagree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import reparam
import reparam.report
from reparam import cost
from reparam.convspec import spec_from_conv
from reparam.demo import randomize_batch_norms
from reparam.testing import strategies as S

f64 = torch.float64


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    return cost.count_macs(module.double().eval(), (x,))


# --------------------------------------------------------------------------------------------
# the model, by hand


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        # 1×1 map, 3×3 kernel, padding 1: the 8 padding taps are computed too
        (nn.Conv2d(4, 2, 3, padding=1), (1, 4, 1, 1), 1 * 2 * 1 * 4 * 9),
        # 1×1 map, stride 2: one output position, not 1/4 of one
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (3, 4, 1, 1), 3 * 6 * 1 * 4 * 9),
        # 7×7, stride 2, padding 1, groups 2: 4×4 outputs, 2 input channels per group
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 7, 7), 2 * 6 * 16 * 2 * 9),
        # 7×7 unpadded 3×3: 5×5 outputs
        (nn.Conv2d(3, 5, 3), (1, 3, 7, 7), 5 * 25 * 3 * 9),
        # depthwise 7×7 on 7×7, padding 3
        (nn.Conv2d(8, 8, 7, padding=3, groups=8), (1, 8, 7, 7), 8 * 49 * 1 * 49),
        # 1-D and 3-D
        (nn.Conv1d(2, 3, 5, padding=2), (2, 2, 9), 2 * 3 * 9 * 2 * 5),
        (nn.Conv3d(2, 2, 3, padding=1), (1, 2, 1, 1, 1), 2 * 2 * 27),
    ],
)
def test_conv(conv, shape, expected):
    x = torch.randn(shape, dtype=f64)
    out = conv.double()(x)
    assert cost.layer_macs(conv, out.shape) == expected
    assert cost.layer_macs(spec_from_conv(conv), out.shape) == expected
    assert _macs(conv, x) == expected


@pytest.mark.parametrize(
    ("pool", "shape", "expected"),
    [
        (nn.AvgPool2d(3, 1, 1), (1, 3, 7, 7), 3 * 49 * 9),  # border windows count 9 taps too
        (nn.AvgPool2d(2), (2, 3, 7, 7), 2 * 3 * 9 * 4),  # kernel_size given once
        (nn.AvgPool2d(3, 2, 1), (1, 2, 1, 1), 2 * 1 * 9),  # 1×1 map
        (nn.AvgPool1d(3), (1, 2, 7), 2 * 2 * 3),
        (nn.AvgPool3d((1, 2, 2)), (1, 1, 2, 4, 4), 1 * 2 * 2 * 2 * 4),
    ],
)
def test_avg_pool(pool, shape, expected):
    x = torch.randn(shape, dtype=f64)
    assert cost.layer_macs(pool, pool(x).shape) == expected
    assert _macs(pool, x) == expected


def test_adaptive_and_global_pools():
    x = torch.randn(2, 3, 7, 7, dtype=f64)
    # windows [0,3), [2,5), [4,7): 3 taps each, 3 windows per dim
    assert _macs(nn.AdaptiveAvgPool2d(3), x) == 2 * 3 * (3 * 3) ** 2
    # 7 → 2: windows [0,4), [3,7)
    assert _macs(nn.AdaptiveAvgPool2d(2), x) == 2 * 3 * (4 + 4) ** 2
    # a global pool reads every element once, however it is written
    assert _macs(nn.AdaptiveAvgPool2d(1), x) == x.numel()
    assert cost.count_macs(lambda t: t.mean((2, 3)), (x,)) == x.numel()
    assert cost.count_macs(lambda t: F.avg_pool2d(t, 7), (x,)) == x.numel()


def test_linear_and_matmul():
    lin = nn.Linear(10, 7).double()
    assert _macs(lin, torch.randn(5, 10, dtype=f64)) == 5 * 7 * 10
    assert _macs(lin, torch.randn(2, 5, 10, dtype=f64)) == 2 * 5 * 7 * 10
    assert cost.layer_macs(lin, (2, 5, 7)) == 2 * 5 * 7 * 10
    a, b = torch.randn(3, 4, 6, dtype=f64), torch.randn(3, 6, 2, dtype=f64)
    assert cost.count_macs(torch.bmm, (a, b)) == 3 * 4 * 6 * 2
    assert cost.count_macs(torch.matmul, (a[0], b[0])) == 4 * 6 * 2


def test_transposed_conv():
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2).double()
    x = torch.randn(1, 4, 5, 5, dtype=f64)
    assert _macs(up, x) == 4 * 25 * 3 * 9  # every input element × C_out/groups × taps


def test_elementwise_is_free_and_flops_are_twice_macs():
    """Norms, activations and adds are not counted (no rule adds any); on convs and linears
    the report's FLOPs are torch's FlopCounterMode's."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 36, 5),
    ).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=f64)
    macs = cost.count_macs(net, (x,))
    assert macs == 2 * 36 * 8 * 27 + 2 * 36 * 8 * 8 + 2 * 5 * 8 * 36
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    assert counter.get_total_flops() == 2 * macs
    assert reparam.report.count_flops(net, (x,)) == 2 * macs


def test_count_does_not_write_the_inputs():
    x = torch.randn(1, 2, 3, dtype=f64)
    before = x.clone()
    cost.count_macs(lambda t: t.add_(1), (x,))
    assert torch.equal(x, before)


def test_fallback_without_shapes_is_per_output_position():
    a, b = nn.Conv2d(4, 2, 1), nn.Conv2d(2, 1, 3, stride=2)
    merged = nn.Conv2d(4, 1, 3, stride=2)
    before, after, exact = cost.compare([(a, None), (b, (1, 1, 4, 4))], [(merged, None)])
    # the first layer once per output position of the second, not prod(stride) = 4 times
    assert (before, after, exact) == (8 + 18, 36, False)
    before, after, exact = cost.compare([(a, (1, 2, 9, 9)), (b, (1, 1, 4, 4))],
                                        [(merged, (1, 1, 4, 4))])
    assert (before, after, exact) == (81 * 8 + 16 * 18, 16 * 36, True)
    assert cost.per_output(nn.AvgPool2d(3)) == 0  # no channel count: credited nothing


# --------------------------------------------------------------------------------------------
# the false alarm of issue 11 (block_stacks_slow, ~780 examples in)


class _BNAndPad(nn.Module):
    """DBB's BN-and-pad: BN, then pad with the value the BN gives a zero input."""

    def __init__(self, channels: int, pad: int) -> None:
        super().__init__()
        self.bn, self.pad = nn.BatchNorm2d(channels), pad

    def forward(self, x):
        bn = self.bn
        fill = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fill = fill.view(1, -1, 1, 1)
        return F.pad(bn(x) - fill, [self.pad] * 4) + fill


class _Seq1x1Kxk(nn.Module):
    """The block that raised the alarm: conv1×1+BN → pad with BN(0) → conv3×3 (p=0, s=2)+BN."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = _BNAndPad(mid, 1)
        self.conv2 = nn.Conv2d(mid, cout, 3, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn2(self.conv2(self.bn1(self.conv1(x))))


class _DBB(nn.Module):
    """DBB-style block (arXiv:2103.13425): 3×3+BN, 1×1+BN, 1×1→BN-and-pad→avg pool→BN."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.kxk = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.one = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.avg = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), _BNAndPad(c, 1), nn.AvgPool2d(3, 1), nn.BatchNorm2d(c)
        )

    def forward(self, x):
        return self.kxk(x) + self.one(x) + self.avg(x)


def _deploy_exact(model: nn.Module, x: torch.Tensor, other: torch.Tensor):
    model = randomize_batch_norms(model.double(), seed=5).eval()
    result = reparam.deploy_with_report(model, x)  # the final FLOP check runs in here
    report = result.report
    assert report.flops_after <= report.flops_before
    for inp in (x, other):
        assert reparam.relative_error(model(inp), result.model(inp)) <= 1e-9
    return result


def _fired(result) -> dict[str, int]:
    return result.report.fired()


def test_issue_false_alarm_seq_pad_block_on_a_1x1_map():
    """On a 1×1 map the 3×3 conv reads one pixel of the 1×1's output and eight of fill: the
    composed 3×3 over 4 channels (36 MACs) costs more than 1×1 (8) + 3×3 over 2 (18).
    The old per-output estimate counted the 1×1 four times (stride 2) and merged; the final
    count then raised its false alarm. Now the rule refuses, with the cost as its reason."""
    model = nn.Sequential(nn.Conv2d(1, 4, 1, stride=2), _Seq1x1Kxk(4, 2, 1))
    x = torch.randn(1, 1, 1, 1, dtype=f64)
    result = _deploy_exact(model, x, torch.randn(3, 1, 1, 1, dtype=f64))
    assert "sequential_convs" not in _fired(result)
    reasons = [o.reason for o in result.report.refusals if o.rule == "pad_through_pointwise"]
    assert reasons and all("36 vs 26 on the example input" in r for r in reasons), reasons


def test_same_block_merges_where_it_saves_work():
    """On 8×8 the 1×1 runs on 64 pixels for 16 outputs: composing saves (576 vs 800 MACs)."""
    x = torch.randn(2, 4, 8, 8, dtype=f64)
    result = _deploy_exact(_Seq1x1Kxk(4, 2, 1), x, torch.randn(1, 4, 8, 8, dtype=f64))
    assert _fired(result).get("sequential_convs") == 1
    assert sum(isinstance(m, nn.Conv2d) for m in result.model.modules()) == 1
    assert result.report.flops_before == 2 * 2 * (64 * 8 + 16 * 18)
    assert result.report.flops_after == 2 * 2 * 16 * 36


@pytest.mark.parametrize("spatial", [1, 2, 7])
def test_dbb_stack_on_small_maps(spatial):
    """Two DBB-style blocks: on every map size deploy succeeds exactly, and each avg / 1×1
    branch either merges into the 3×3 or is refused as slower."""
    model = nn.Sequential(_DBB(3), nn.ReLU(), _DBB(3))
    x = torch.randn(1, 3, spatial, spatial, dtype=f64)
    result = _deploy_exact(model, x, torch.randn(2, 3, spatial, spatial, dtype=f64))
    convs = sum(isinstance(m, nn.Conv2d) for m in result.model.modules())
    slower = [o for o in result.report.refusals if "slower" in o.reason]
    assert convs == 2 or slower, result.report.refusals


# --------------------------------------------------------------------------------------------
# the rules' accounting and the whole-model count agree


def _saved_by_rewrites(report) -> int:
    return sum(r.macs_before - r.macs_after for r in report.rewrites)


@settings(max_examples=8, deadline=None)  # whole-model deploys: kept short
@given(data=st.data())
def test_rewrites_account_for_the_whole_model_saving(data):
    """Whatever fires on a random block stack (small maps included), the multiply-adds the
    rewrites report saving are exactly what the whole-model count saved: each rule decided
    on the same numbers the final check compares."""
    case = data.draw(S.block_stacks(dims=2, max_depth=2, max_branches=3))
    result = reparam.deploy_with_report(case.module, case.example_input, check=False)
    report = result.report
    assert report.flops_after <= report.flops_before
    assert report.flops_before - report.flops_after == 2 * _saved_by_rewrites(report), (
        case.description,
        [(r.rule, r.site, r.macs_before, r.macs_after) for r in report.rewrites],
    )


class _Twice(nn.Module):
    """One block called on a 7×7 crop and on the 32×32 map: the unpadded 3×3 → 3×3 pair is
    cheaper as one 5×5 on 7×7 (a 5×5 middle map for a 3×3 output) but dearer on 32×32."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))

    def forward(self, x):
        return self.block(x[..., :7, :7]).mean((2, 3)) + self.block(x).mean((2, 3))


def test_scope_called_at_two_shapes_is_judged_on_both():
    """On the 7×7 crop the 5×5 merge saves work (3·3·8·8·25 < (5·5 + 3·3)·8·8·9), on 32×32 it
    costs more. ``block`` itself is judged on both calls and keeps its pair; the parent, which
    sees the two calls as two sites, merges the crop's call only. Before, ``block`` was judged
    on its first call alone, merged, and the whole-model count raised a false alarm."""
    model = _Twice().double().eval()
    x = torch.randn(1, 8, 32, 32, dtype=f64)
    result = _deploy_exact(model, x, torch.randn(2, 8, 32, 32, dtype=f64))
    report = result.report
    crop, crop_merged = (5 * 5 + 3 * 3) * 8 * 8 * 9, 3 * 3 * 8 * 8 * 25
    full, full_merged = (30 * 30 + 28 * 28) * 8 * 8 * 9, 28 * 28 * 8 * 8 * 25
    assert [(r.macs_before, r.macs_after) for r in report.rewrites] == [(crop, crop_merged)]
    assert report.flops_before - report.flops_after == 2 * (crop - crop_merged)
    means = 8 * 3 * 3 + 8 * 28 * 28  # the two global means: one per element they read
    assert report.flops_before == 2 * (crop + full + means)
    # the full map's call still runs the pair (the crop's runs the merged 5×5)
    assert sum(isinstance(m, nn.Conv2d) for m in result.model.modules()) == 3
    # the report keeps the outermost refusal: the parent's, at the full map's call
    reasons = [o.reason for o in report.refusals if o.rule == "sequential_convs"]
    assert reasons and f"{full_merged:,} vs {full:,}" in reasons[0], reasons


class _TwiceSmall(_Twice):
    def forward(self, x):
        return self.block(x[..., :7, :7]).mean((2, 3)) + self.block(x[..., :8, :8]).mean((2, 3))


def test_scope_called_at_two_small_shapes_merges_where_both_save():
    """Both calls on small maps (7×7, 8×8): the merge saves on each and fires."""
    model = _TwiceSmall().double().eval()
    x = torch.randn(1, 8, 32, 32, dtype=f64)
    result = _deploy_exact(model, x, torch.randn(3, 8, 16, 16, dtype=f64))
    assert _fired(result).get("sequential_convs") == 1
    saved = sum(r.macs_before - r.macs_after for r in result.report.rewrites)
    assert result.report.flops_before - result.report.flops_after == 2 * saved

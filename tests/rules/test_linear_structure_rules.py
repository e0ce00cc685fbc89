"""Issue 8 (part A) rules, one structure at a time: what fires, and what must be refused
(with the reason ``explain()`` shows)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms


def _deploy(model: nn.Module, *shape: int):
    model = randomize_batch_norms(model.double(), seed=5).eval()
    x = torch.randn(*shape, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    assert reparam.relative_error(model(x), result.model(x)) <= 1e-9
    return result


def _reasons(result) -> list[str]:
    return [o.reason for o in result.report.refusals]


# -- computed weights ------------------------------------------------------------------------


class _Computed(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.s = nn.Parameter(torch.randn(4, 1, 1, 1))
        self.emb = nn.Embedding(5, 3)

    def forward(self, x):
        if self.mode == "input":  # the kernel depends on the input: stays functional
            return F.conv2d(x, self.w * x.mean(), padding="same")
        if self.mode == "tied":  # a tied head: the weight is also read elsewhere
            return F.linear(x.mean((2, 3)), self.emb.weight) + self.emb.weight.sum()
        return F.conv2d(x, self.w * self.s, None, 1, "same", 1, 1)


def test_computed_kernel_becomes_a_conv():
    result = _deploy(_Computed("param"), 2, 3, 6, 5)
    assert result.report.fired() == {"computed_weights": 1}
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].padding == "same"
    assert not hasattr(result.model, "w")  # the training-time parameters are gone


def test_kernel_from_the_input_refused():
    result = _deploy(_Computed("input"), 2, 3, 6, 5)
    assert "computed_weights" not in result.report.fired()
    assert any("depends on the input" in r for r in _reasons(result))


def test_tied_linear_weight_refused():
    result = _deploy(_Computed("tied"), 2, 3, 6, 5)
    assert "computed_weights" not in result.report.fired()
    assert any("tied" in r for r in _reasons(result))


# -- transposed conv + norm ------------------------------------------------------------------


def test_transposed_conv_norm_output_used_twice_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.bn = nn.ConvTranspose2d(4, 6, 3, 2, groups=2), nn.BatchNorm2d(6)

        def forward(self, x):
            y = self.up(x)
            return self.bn(y) + y

    result = _deploy(Twice(), 1, 4, 3, 3)
    assert "transposed_conv_norm" not in result.report.fired()
    assert any("also used elsewhere" in r for r in _reasons(result))


# -- crops -----------------------------------------------------------------------------------


def test_crop_then_padding_refused_and_negative_pad_not_folded():
    class CropPad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3)
            self.b = nn.Conv2d(3, 3, 1)
            self.c = nn.Conv2d(3, 3, (3, 1), padding=(0, 1))

        def forward(self, x):
            # ACNet-style: b reads the centre crop, exact as a conv on x
            y = self.a(x) + self.b(x[:, :, 1:-1, 1:-1])
            # c crops two columns each side, then pads that axis: the border would read
            # real pixels where the original reads zeros
            return y + self.c(F.pad(x, [-2, -2]))

    result = _deploy(CropPad(), 1, 3, 7, 8)
    assert result.report.fired() == {"parallel_branches": 1}  # a and b merge, c stays
    assert any("negative pad" in r for r in _reasons(result))
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2


def test_crops_with_stops_from_the_start_are_not_merged_as_fixed_padding():
    class Stops(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

        def forward(self, x):
            # at 8×8 these are crops (0, 2) and (1, 1); at 10×10 they are (0, 4) and (1, 3):
            # a conv with fixed negative padding would be right at one size only
            return self.a(x[:, :, 0:6, 0:6]) + self.b(x[:, :, 1:7, 1:7])

    model = Stops().double().eval()
    result = _deploy(model, 2, 3, 8, 8)
    assert "parallel_branches" not in result.report.fired()
    other = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    assert reparam.relative_error(model(other), result.model(other)) <= 1e-9


class _StopFromShape(nn.Module):
    """ACNet-like crops whose stop is computed from the input's size at run time."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        return self.a(x[..., : h - 2, : w - 2]) + self.b(x[:, :, 1 : h - 1, 1 : w - 1])


class _Narrowed(nn.Module):
    """The same crops written with ``narrow`` (a start and a fixed length)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        a = x.narrow(2, 0, 6).narrow(3, 0, 6)
        b = torch.narrow(torch.narrow(x, 2, 1, 6), 3, 1, 6)
        return self.a(a) + self.b(b)


class _FixedWindow(nn.Module):
    """A fixed 6×6 window taken at two offsets, the stops as plain integers."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.size = 6

    def forward(self, x):
        s = self.size
        return self.a(x[:, :, :s, :s]) + self.b(x[:, :, 1 : 1 + s, 1 : 1 + s])


@pytest.mark.parametrize("make", [_StopFromShape, _Narrowed, _FixedWindow])
def test_crops_in_other_styles_stay_right_at_every_size(make):
    model = make().double().eval()
    result = _deploy(model, 2, 3, 8, 8)
    for shape in [(2, 3, 8, 8), (1, 3, 8, 8), (1, 3, 10, 10), (3, 3, 9, 12)]:
        other = torch.randn(*shape, dtype=torch.float64)
        assert reparam.relative_error(model(other), result.model(other)) <= 1e-9, shape


# -- identity activations --------------------------------------------------------------------


def test_leaky_relu_slope_below_one_is_kept():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.LeakyReLU(0.99), nn.Conv2d(6, 4, 3))
    result = _deploy(model, 1, 3, 5, 5)
    assert "sequential_convs" not in result.report.fired()
    assert any(isinstance(m, nn.LeakyReLU) for m in result.model.modules())


def test_identity_activations_in_every_style_drop():
    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 3)
            self.p, self.l = nn.PReLU(6, init=1.0), nn.LeakyReLU(1.0)
            self.act_learn = 1

        def forward(self, x):
            y = self.l(self.p(self.c1(x)))
            y = F.leaky_relu(y, negative_slope=self.act_learn)
            return self.c2(F.leaky_relu(y, 1.0))

    result = _deploy(Acts(), 2, 3, 6, 6)
    assert result.report.fired() == {"sequential_convs": 1}
    assert not any(isinstance(m, (nn.PReLU, nn.LeakyReLU)) for m in result.model.modules())


# -- linear heads ----------------------------------------------------------------------------


def test_heads_on_different_inputs_not_merged():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.head_dist = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return (self.head(x) + self.head_dist(x.relu())) / 2

    result = _deploy(TwoInputs(), 4, 6)
    assert "parallel_linears" not in result.report.fired()


def test_three_heads_with_coefficients_merge():
    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.hs = nn.ModuleList(nn.Linear(6, 3) for _ in range(3))

        def forward(self, x):
            a, b, c = (h(x) for h in self.hs)
            return 0.2 * a + (b / 4) * -1 + c * 3

    result = _deploy(Three(), 4, 6)
    assert result.report.fired() == {"parallel_linears": 1}


# -- DBB avg branch --------------------------------------------------------------------------


def test_avgpool_without_pad_counting_refused():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Conv2d(4, 4, 3, padding=1)
            self.one = nn.Conv2d(4, 4, 1, bias=False)
            self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

        def forward(self, x):
            return self.k(x) + self.avg(self.one(x))

    result = _deploy(Block(), 1, 4, 6, 6)
    assert "parallel_branches" not in result.report.fired()
    assert any("count_include_pad=False" in r for r in _reasons(result))


def test_biased_1x1_before_padded_pool_refused():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Conv2d(4, 4, 3, padding=1)
            self.one = nn.Conv2d(4, 4, 1, bias=True)
            self.avg = nn.AvgPool2d(3, 1, 1)

        def forward(self, x):
            return self.k(x) + self.avg(self.one(x))

    result = _deploy(Block(), 1, 4, 6, 6)
    assert "parallel_branches" not in result.report.fired()
    assert any("border would see the bias" in r for r in _reasons(result))

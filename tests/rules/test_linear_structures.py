"""Issue 8 structures in the papers' styles: deploy is exact (float64, on the example input
and on another batch / spatial size), leaves no more convs / norms / linears than the paper's
own conversion, and refuses with a reason where a merge would not be exact."""

from __future__ import annotations

import pytest
import torch

import reparam
from reparam.demo import randomize_batch_norms

from . import _paper_models as P


def _deploy(model, x, other=None, **kw):
    model = randomize_batch_norms(model.double(), seed=5).eval()
    result = reparam.deploy_with_report(model, x, **kw)
    with torch.no_grad():
        assert reparam.relative_error(model(x), result.model(x)) <= 1e-9
        if other is not None:
            assert reparam.relative_error(model(other), result.model(other)) <= 1e-9
    return model, result


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _reasons(result) -> str:
    return " | ".join(f"{o.rule}: {o.reason}" for o in result.report.refusals)


# -- norms on the far side of a layout change -------------------------------------------------
def test_unireplknet_ffn_norm_after_permute():
    model, result = _deploy(P.UniRepLKNetStyleBlock(), _x(2, 8, 6, 5), _x(1, 8, 4, 7))
    assert result.report.fired().get("norm_after_layout") == 1
    assert P.op_counts(model) == (1, 2, 2)
    assert P.op_counts(result.model) <= P.UniRepLKNetStyleBlock.PAPER_DEPLOY


def test_conv_flatten_bn1d_on_a_1x1_map():
    model, result = _deploy(P.ConvFlattenNormHead(), _x(2, 6, 5, 5), _x(3, 6, 7, 4))
    assert result.report.fired().get("norm_after_layout") == 1
    assert P.op_counts(result.model) == P.ConvFlattenNormHead.PAPER_DEPLOY


def test_bn1d_over_positions_is_refused():
    _, result = _deploy(P.ConvFlattenNormHead(positions=True), _x(2, 6, 6, 6))
    assert P.op_counts(result.model)[1] == 1
    assert "per-position affine" in _reasons(result)


# -- a norm with several linear consumers -----------------------------------------------------
def test_inception_head_shared_norm():
    model, result = _deploy(P.InceptionStyleHead(), _x(2, 4, 7, 7), _x(1, 4, 5, 9))
    assert result.report.fired().get("norm_into_consumers") == 1
    assert P.op_counts(result.model) == P.InceptionStyleHead.PAPER_DEPLOY


def test_batchnorm_attention_prenorm_into_qkv():
    model, result = _deploy(P.BatchNormAttention(), _x(2, 6, 5), _x(3, 6, 9))
    assert result.report.fired().get("norm_into_consumers") == 1
    assert P.op_counts(result.model) == P.BatchNormAttention.PAPER_DEPLOY


@pytest.mark.parametrize("reader, words", [
    ("gate", "not linear in it"),
    ("residual", "not linear in it"),
    ("padded", "zero-pads its input"),
])
def test_shared_norm_refused_when_a_reader_is_not_linear(reader, words):
    _, result = _deploy(P.InceptionStyleHead(reader=reader), _x(2, 4, 7, 7))
    assert P.op_counts(result.model)[1] == 1
    assert words in _reasons(result)


# -- perpendicular sequential kernels ---------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
def test_repnext_medium_conv_becomes_one_conv(stride):
    model, result = _deploy(P.RepNeXtStyleMediumConv(stride=stride), _x(2, 4, 11, 9),
                            _x(1, 4, 8, 14))
    assert result.report.fired().get("perpendicular_convs") == 2
    assert P.op_counts(model) == (7, 0, 0)
    assert P.op_counts(result.model) == P.RepNeXtStyleMediumConv.PAPER_DEPLOY
    assert result.report.flops_after < result.report.flops_before


def test_repnext_large_pair_kept_unless_allow_slower():
    x = _x(1, 4, 12, 12)
    _, result = _deploy(P.RepNeXtStyleLargeConv(bias=False), x)
    assert P.op_counts(result.model) == P.RepNeXtStyleLargeConv.PAPER_DEPLOY
    assert "costs more multiply-adds" in _reasons(result)
    _, forced = _deploy(P.RepNeXtStyleLargeConv(bias=False), x, _x(2, 4, 7, 15),
                        allow_slower=True)
    assert P.op_counts(forced.model) == (1, 0, 0)


def test_perpendicular_bias_at_a_zero_padded_border_is_refused():
    _, result = _deploy(P.RepNeXtStyleLargeConv(bias=True), _x(1, 4, 12, 12), allow_slower=True)
    assert P.op_counts(result.model)[0] == 2
    assert "carries the first conv's bias" in _reasons(result)


def test_a_conv_called_by_keyword_is_read_without_error():
    """``conv(input=x)``: perpendicular_convs read ``node.args[0]`` before checking there was
    one (IndexError in deploy)."""

    class Keyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.conv(input=x)

    _, result = _deploy(Keyword(), _x(2, 4, 3, 3))
    assert result.report.fired() == {}


# -- Locality Injection in any style ----------------------------------------------------------
def test_repmlpnet_block_official_style():
    model, result = _deploy(P.RepMLPNetStyleBlock(), _x(2, 4, 6, 9), _x(1, 4, 9, 3))
    assert result.report.fired().get("affine_branch_fc") == 1
    assert P.op_counts(model) == (3, 3, 0)
    assert P.op_counts(result.model) == P.RepMLPNetStyleBlock.PAPER_DEPLOY


def test_repmlpnet_block_unpacking_the_input_size():
    _, result = _deploy(P.RepMLPNetStyleBlock(unpack_size=True), _x(2, 4, 6, 9))
    assert P.op_counts(result.model) == P.RepMLPNetStyleBlock.PAPER_DEPLOY


def test_repmlp_resnet_unit():
    model, result = _deploy(P.RepMLPResNetStyleUnit(), _x(2, 4, 4, 6), _x(1, 4, 2, 9))
    assert P.op_counts(result.model) == P.RepMLPResNetStyleUnit.PAPER_DEPLOY, _reasons(result)


def test_unfold_partitions_with_reflect_padding():
    model, result = _deploy(P.UnfoldPartitionMLP(), _x(2, 3, 4, 6), _x(1, 3, 6, 3))
    assert result.report.fired().get("affine_branch_fc") == 1
    assert P.op_counts(result.model) == P.UnfoldPartitionMLP.PAPER_DEPLOY


def test_a_relu_branch_stays_with_its_reason():
    _, result = _deploy(P.RepMLPResNetStyleUnit(relu_branch=True), _x(2, 4, 4, 6))
    assert P.op_counts(result.model) == (2, 0, 0)  # the FC and the ReLU branch's conv
    assert "not an affine op" in _reasons(result)


def test_a_refused_locality_injection_leaves_the_fc_bias_alone():
    """locality_injection used to add the conv biases into the FC's own bias in place (float64
    models) before refusing a reflect-padded conv; the later merge then counted them twice."""
    from reparam.testing.strategies_affine_branch import _Branch, _PartitionFC

    torch.manual_seed(0)
    branches = [_Branch("conv", 1, 1, 1, "zeros", 1), _Branch("conv", 1, 1, 3, "reflect", 1)]
    model = _PartitionFC(1, 1, 2, 2, "linear", "view_permute", branches, None)
    _, result = _deploy(model, _x(1, 1, 2, 2), _x(2, 1, 4, 2))
    assert P.op_counts(result.model) == (0, 0, 1)


class _SharedPartitionFc(torch.nn.Module):
    """``y = reshape(fc(flatten(P)))`` summed with ``conv(P)`` *and* returned on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2 * 4 * 4, 2 * 4 * 4)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, p):
        y = self.fc(p.flatten(1)).reshape(-1, 2, 4, 4)
        return y + self.conv(p), y


class _SharedRowFc(torch.nn.Module):
    """``y = bn(fc(z))`` summed with ``2 z`` *and* returned on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)
        self.bn = torch.nn.BatchNorm1d(6)

    def forward(self, z):
        y = self.bn(self.fc(z))
        return y + z * 2, y


@pytest.mark.parametrize(
    "model, x, other",
    [
        (_SharedPartitionFc(), _x(3, 2, 4, 4), _x(5, 2, 4, 4)),
        (_SharedRowFc(), _x(3, 6), _x(4, 6)),
    ],
)
def test_an_fc_branch_read_elsewhere_keeps_its_fc(model, x, other):
    """Merging the other summands into the FC would change what the other reader sees."""
    model = randomize_batch_norms(model.double(), seed=5).eval()
    result = reparam.deploy_with_report(model, x, check=False)
    fired = result.report.fired()
    assert "locality_injection" not in fired and "affine_branch_fc" not in fired
    with torch.no_grad():
        for inputs in (x, other):
            for got, want in zip(result.model(inputs), model(inputs), strict=True):
                assert reparam.relative_error(want, got) <= 1e-9

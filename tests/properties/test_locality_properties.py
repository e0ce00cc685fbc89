"""Locality Injection through the engine: random partitions, share sets, kernel sets and
channel counts (C ≠ O included) in float64; after deploy only the FC is executed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms
from reparam_models.layers import RepMLP, RepMLPBlock

from ._harness import DEVICES, SLOW_EXAMPLES, count_example

KERNELS = st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3, unique=True).map(
    lambda ks: tuple(sorted(ks)))


@st.composite
def v2_blocks(draw):
    s = draw(st.sampled_from([1, 2, 4]))
    c = s * draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    parts = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    block = RepMLPBlock(c, h, w, num_sharesets=s, reparam_conv_k=draw(KERNELS),
                        globalperceptron_reduce=1)
    return block, (2, c, h * parts[0], w * parts[1])


@st.composite
def v1_blocks(draw):
    g = draw(st.sampled_from([1, 2]))
    cin, cout = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 4)), draw(st.integers(2, 4))
    hp, wp = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    block = RepMLP(cin, cout, h * hp, w * wp, h, w, reparam_conv_k=draw(KERNELS), fc3_groups=g)
    return block, (2, cin, h * hp, w * wp)


def _check(block: nn.Module, shape: tuple[int, ...], device: str) -> None:
    block = randomize_batch_norms(block.double(), seed=1).eval().to(device)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    result = reparam.deploy_with_report(block, x, check=False)
    assert result.report.fired().get("locality_injection") == 1, result.report.refusals
    assert reparam.relative_error(block(x), result.model(x)) <= 1e-9
    names = [n for n, _ in result.model.named_modules()]
    assert not any("repconv" in n for n in names)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for n, m in result.model.named_modules() if n == "fc3_bn")


@pytest.mark.parametrize("device", DEVICES)
@given(case=st.one_of(v2_blocks(), v1_blocks()))
def test_locality_injection_exact(device, case):
    _check(*case, device)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=SLOW_EXAMPLES)
@given(case=st.one_of(v2_blocks(), v1_blocks()))
def test_locality_injection_exact_slow(device, case):
    _check(*case, device)
    count_example()


def test_locality_injection_refuses_a_reflect_padded_conv():
    block = RepMLPBlock(4, 3, 3, num_sharesets=4, reparam_conv_k=(3,),
                        globalperceptron_reduce=1)
    block.repconv3.conv.padding_mode = "reflect"
    block = randomize_batch_norms(block.double(), seed=1).eval()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    result = reparam.deploy_with_report(block, x)
    assert "locality_injection" not in result.report.fired()
    assert any("mode 'reflect'" in o.reason for o in result.report.refusals)
    assert reparam.relative_error(block(x), result.model(x)) <= 1e-9

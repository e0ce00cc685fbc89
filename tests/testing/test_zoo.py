"""The zoo models run, match their plain twins' interface, and their blocks are exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reparam.testing import zoo
from reparam.testing.oracle import matches_single_conv

NAMES = sorted(zoo.ZOO)


def test_tables_agree() -> None:
    assert set(zoo.ZOO) == set(zoo.PLAIN_TWINS) == set(zoo.ZOO_INPUT_SHAPES)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_runs(device: torch.device, name: str) -> None:
    model = zoo.ZOO[name]().to(device)
    plain = zoo.PLAIN_TWINS[name]().to(device)
    x = zoo.zoo_example_input(name, device=device)
    assert all(not m.training for m in model.modules())
    for t in model.state_dict().values():
        if t.is_floating_point():
            assert t.dtype == torch.float64
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(float(m.running_var.min()) >= 0.5 for m in bns)
    assert all(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)
    with torch.no_grad():
        y = model(x)
        y_plain = plain(x)
    assert y.shape == y_plain.shape
    assert torch.isfinite(y).all()
    n_train = sum(p.numel() for p in model.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_plain < n_train


@pytest.mark.parametrize("name", NAMES)
def test_zoo_is_deterministic_and_takes_dtype(name: str) -> None:
    a, b = zoo.ZOO[name](seed=1), zoo.ZOO[name](seed=1)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    c = zoo.ZOO[name](seed=2)
    assert any(not torch.equal(va, vc) for va, vc in zip(
        a.state_dict().values(), c.state_dict().values(), strict=True))
    m32 = zoo.ZOO[name](dtype=torch.float32)
    x = zoo.zoo_example_input(name, dtype=torch.float32)
    with torch.no_grad():
        assert m32(x).dtype == torch.float32


@pytest.mark.parametrize("name", [n for n in NAMES if n != "dbb_slice_assign"])
def test_zoo_is_fx_traceable(name: str) -> None:
    model = zoo.ZOO[name]()
    x = zoo.zoo_example_input(name)
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_dbb_slice_assign_matches_functional_pad() -> None:
    a, b = zoo.make_dbb(), zoo.make_dbb_slice_assign()
    b.load_state_dict(a.state_dict())
    x = zoo.zoo_example_input("dbb")
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


# The re-parameterizable blocks, with the attribute that holds their activation (if any).
_BLOCKS: dict[type, str | None] = {
    zoo.RepVGGBlock: "nonlinearity",
    zoo.ACBlock: None,
    zoo.DiverseBranchBlock: "nonlinear",
    zoo.MobileOneBlock: "activation",
    zoo.ReparamLargeKernelConv: None,
    zoo.DilatedReparamBlock: None,
}


def _channels_in(block: nn.Module) -> int:
    conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
    return conv.in_channels


@pytest.mark.parametrize("name", NAMES)
def test_zoo_blocks_are_exactly_one_conv(device: torch.device, name: str) -> None:
    """Every stride-1 block, activation removed, is exactly one zero-padded conv."""
    model = zoo.ZOO[name]().to(device)
    checked = 0
    for block in model.modules():
        if type(block) not in _BLOCKS:
            continue
        conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
        if conv.stride != (1, 1):
            continue
        block = copy.deepcopy(block)
        act = _BLOCKS[type(block)]
        if act is not None:
            setattr(block, act, nn.Identity())
        g = torch.Generator().manual_seed(0)
        x = torch.randn((2, _channels_in(block), 9, 9), generator=g, dtype=torch.float64)
        assert matches_single_conv(block, x.to(device), radius=6), type(block).__name__
        checked += 1
    assert checked > 0

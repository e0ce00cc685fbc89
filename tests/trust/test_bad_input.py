"""Bad input: one ReparamError line naming the module and the reason; nothing touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reparam

from ._common import prepared


def _net():
    return prepared(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


@pytest.mark.parametrize(
    "inputs, match",
    [
        (torch.randn(1, 5, 8, 8, dtype=torch.float64), "do not fit Sequential"),
        (torch.randint(0, 3, (1, 3, 8, 8)), "do not fit Sequential"),
        ({"x": torch.randn(1, 3, 8, 8)}, "dict"),
        ("an image", "must be a tensor"),
    ],
)
def test_bad_example_inputs(inputs, match):
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(reparam.ReparamError, match=match):
        reparam.deploy(model, inputs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_meta_device_module():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(reparam.ReparamError, match="'0'.*meta device"):
        reparam.deploy(model)


def test_lazy_module():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.BatchNorm2d(4))
    with pytest.raises(reparam.ReparamError, match="'0'.*lazy"):
        reparam.deploy(model, torch.randn(1, 3, 8, 8))


def test_scriptmodule_child_is_kept_and_the_rest_merges():
    model = _net()
    scripted = torch.jit.script(prepared(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))))
    full = nn.Sequential(model, scripted).eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    result = reparam.deploy_with_report(full, x)
    assert any("TorchScript" in r for _, r in result.report.skipped_scopes)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model[0].modules())
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), full(x), rtol=1e-9, atol=1e-12)


def test_degenerate_norm_is_left_alone_at_its_site():
    model = prepared(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    )
    with torch.no_grad():
        model[1].running_var[0] = -1.0
        model[1].eps = 0.0
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    norms = [m for m in result.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 and norms[0].running_var[0] == -1.0  # only the degenerate one
    assert any("running_var + eps" in r for _, r in result.report.unfolded_norms)

"""A rewritten forward behaves like the original for every call it accepted, or says why not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reparam
from reparam.graph.guards import SpecializationError

from ._common import outputs_agree, prepared


class OptionalIdentity(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x, identity=None):
        out = self.bn(self.conv(x))
        if identity is None:
            identity = x
        return F.relu(out + identity)


class FlagBlock(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)
        self.use_extra = False

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.use_extra:
            y = y * 2
        return y


class ReshapeLikeInput(nn.Module):
    """The RepMLPNet authors' style: x.reshape(*inputs.size())."""

    def __init__(self, c=4):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1, groups=2)
        self.conv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, inputs):
        y = self.bn(self.conv(inputs))
        return self.fc(y).reshape(*inputs.size())


class IntOfShape(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        half = int(x.shape[-1] / 2)
        return self.bn(self.conv(x))[..., :half]


class IsinstanceInput(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        if isinstance(x, (list, tuple)):
            x = torch.cat(list(x), dim=1)
        return self.bn(self.conv(x))


def test_optional_identity_traced_as_none_is_guarded():
    model = prepared(OptionalIdentity())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 9, 9, dtype=torch.float64))
    with pytest.raises(AssertionError, match="identity"):
        deployed(x, torch.zeros_like(x))


def test_optional_identity_called_both_ways_from_a_parent():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = OptionalIdentity(), OptionalIdentity()

        def forward(self, x):
            return self.b(self.a(x), identity=x * 0.5)

    model = prepared(Net())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(3, 4, 5, 5, dtype=torch.float64))


def test_flag_read_from_an_attribute():
    model = prepared(FlagBlock())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x)


def test_reshape_with_unpacked_size_deploys_and_stays_general():
    model = prepared(ReshapeLikeInput())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    result = reparam.deploy_with_report(model, x)
    assert not result.report.skipped_scopes
    assert not isinstance(result.model.bn, nn.BatchNorm2d) if hasattr(result.model, "bn") else True
    outputs_agree(model, result.model, x, torch.randn(5, 4, 3, 8, dtype=torch.float64))


def test_int_of_an_input_shape_is_guarded():
    model = prepared(IntOfShape())
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(3, 4, 5, 8, dtype=torch.float64))
    with pytest.raises(SpecializationError, match="shape"):
        deployed(torch.randn(1, 4, 8, 6, dtype=torch.float64))


def test_isinstance_on_the_input_follows_the_real_call():
    model = prepared(IsinstanceInput())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x, torch.randn(1, 4, 3, 3, dtype=torch.float64))


def test_flag_changed_after_deploy_is_loud():
    model = prepared(FlagBlock())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    deployed.use_extra = True
    with pytest.raises(SpecializationError, match="use_extra"):
        deployed(x)


def test_keyword_callers_still_work_after_specialization():
    model = prepared(OptionalIdentity())
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, (x,))
    with torch.no_grad():
        torch.testing.assert_close(deployed(x, identity=None), model(x, identity=None))

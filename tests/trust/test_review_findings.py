"""Cases a fresh-eyes review found silently wrong or crashing; each is now exact or loud."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reparam
from reparam.graph.guards import SpecializationError

from ._common import outputs_agree, prepared, skipped


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.c(x))


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_list_input_length_is_guarded():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = Base()

        def forward(self, feats):
            out = 0
            for f in feats:
                out = out + self.b(f)
            return out

    model = prepared(Loop())
    x = _x(1, 3, 8, 8)
    deployed = reparam.deploy(model, ([x, x + 1],))
    outputs_agree(model, deployed, ([x, x - 1],))
    try:  # exact for another length, or a loud error: never a silently shorter loop
        outputs_agree(model, deployed, ([x, x, x],))
    except SpecializationError:
        pass


def test_string_mode_attribute_is_guarded():
    class Mode(Base):
        def __init__(self):
            super().__init__()
            self.mode = "double"

        def forward(self, x):
            y = self.bn(self.c(x))
            return y * 2 if self.mode == "double" else y

    model = prepared(Mode())
    deployed = reparam.deploy(model, _x(1, 3, 8, 8))
    deployed.mode = "single"
    with pytest.raises(SpecializationError, match="mode"):
        deployed(_x(1, 3, 8, 8))


def test_attribute_written_onto_a_leaf_is_kept():
    class Stores(Base):
        def forward(self, x):
            y = self.bn(self.c(x))
            self.bn.last = y
            return y

    model = prepared(Stores())
    x = _x(1, 3, 8, 8)
    result = reparam.deploy_with_report(model, x)
    assert "bn.last" in skipped(result.report, "")
    result.model(x)
    assert isinstance(result.model.bn.last, torch.Tensor)


def test_parent_reading_a_child_weight_without_example_inputs():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.blk = Base()

        def forward(self, x):
            return self.blk(x) * self.blk.c.weight.sum()

    model = prepared(Parent())
    deployed = reparam.deploy(model)  # no example inputs
    outputs_agree(model, deployed, _x(2, 3, 6, 6))


def test_inplace_method_without_an_out_of_place_twin_is_kept():
    class Zeroes(Base):
        def forward(self, x):
            t = x * 1
            t.zero_()
            return self.bn(self.c(x)) + t

    model = prepared(Zeroes())
    x = _x(1, 3, 8, 8)
    deployed = reparam.deploy(model, x)
    outputs_agree(model, deployed, x)


def test_infinite_outputs_are_not_a_false_alarm():
    class Log(Base):
        def forward(self, x):
            return torch.log(torch.relu(self.bn(self.c(x))))

    model = prepared(Log())
    x = _x(1, 3, 8, 8)
    deployed = reparam.deploy(model, x)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=1e-9, atol=1e-12)


def test_varargs_forward_is_not_rewritten_unchecked():
    class VarArgs(Base):
        def forward(self, *xs):
            return self.bn(self.c(xs[0]))

    model = prepared(VarArgs())
    result = reparam.deploy_with_report(model, _x(1, 3, 8, 8))
    assert "*args" in skipped(result.report, "")

"""A deployed module can be inspected: its graph, its generated code, a repr that says so."""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

import reparam


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class HasCode(Block):
    code = "user's own attribute"


def test_graph_code_and_repr():
    deployed = reparam.deploy(Block().eval(), torch.randn(1, 3, 8, 8))
    assert "def forward" in deployed.code and "self.conv" in deployed.code
    assert deployed.deployed_code == deployed.code
    assert any(n.op == "call_module" for n in deployed.graph.nodes)
    assert "deployed by reparam" in repr(deployed)
    again = pickle.loads(pickle.dumps(deployed))
    assert "deployed by reparam" in repr(copy.deepcopy(again))


def test_user_attribute_named_code_is_kept():
    deployed = reparam.deploy(HasCode().eval(), torch.randn(1, 3, 8, 8))
    assert deployed.code == "user's own attribute"
    assert "def forward" in deployed.deployed_code

"""A deployed model's own modules live in ``reparam.runtime``: its pickle names no rule file."""

from __future__ import annotations

import io
import pickle

import torch
from torch import nn

import reparam
from reparam.rules import FoldNormAfterConv, GroupedFcAsBmm
from reparam.runtime import FoldedNorm, GroupedPointwiseConv
from reparam.testing import randomize_norms


class BNAct(nn.BatchNorm2d):
    """A norm with a child the rewritten forward still calls (timm's ``BatchNormAct2d``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                     self.bias, False, 0.0, self.eps)
        return self.act(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = BNAct(8)
        self.fc = nn.Conv2d(8 * 4 * 4, 16, 1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return self.fc(y.reshape(y.shape[0], -1, 1, 1)).flatten(1)


def _faster(conv: nn.Conv2d, shape: tuple[int, ...]) -> tuple[float, float]:
    return 2e-3, 1e-3  # the batched matmul "measured" faster: the rule fires


class _NoRules(pickle.Unpickler):
    """Unpickles, recording every module named, and fails on a rule module or deploy.py."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.modules: set[str] = set()

    def find_class(self, module: str, name: str) -> object:
        self.modules.add(module)
        if module.startswith("reparam.rules") or module == "reparam.deploy":
            raise pickle.UnpicklingError(f"the pickle needs {module}.{name}")
        return super().find_class(module, name)


def test_deployed_pickle_depends_on_runtime_not_rules() -> None:
    torch.manual_seed(0)
    model = randomize_norms(Net().double()).eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    bmm = GroupedFcAsBmm(timer=_faster, min_macs=0)
    rules = reparam.RuleRegistry([FoldNormAfterConv(), bmm])
    deployed = reparam.deploy(model, x, rules=rules)
    assert type(deployed.norm) is FoldedNorm and type(deployed.fc) is GroupedPointwiseConv
    loader = _NoRules(pickle.dumps(deployed))
    again = loader.load()
    assert "reparam.runtime" in loader.modules
    for name in ("norm", "fc"):
        assert type(getattr(again, name)).__module__ == "reparam.runtime"
    for batch in (x, torch.randn(5, 3, 4, 4, dtype=torch.float64)):
        torch.testing.assert_close(again(batch), model(batch), rtol=1e-9, atol=1e-12)

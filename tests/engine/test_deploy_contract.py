"""The contract of reparam.deploy: exact, not mutating, idempotent, usable afterwards."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import reparam
from reparam.demo import DemoNet, RepVGGStyleBlock

from .helpers import count, prepare, relerr, reloaded


@pytest.fixture
def demo(device):
    model = prepare(DemoNet(channels=8), device)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, device=device)
    return model, x


def test_outputs_equal_and_structures_merged(demo):
    model, x = demo
    result = reparam.deploy_with_report(model, x)
    deployed = result.model
    assert relerr(model(x), deployed(x)) <= 1e-9
    assert count(deployed, nn.BatchNorm2d) == 0
    # every block is a single conv after deploy
    for block in deployed.stages:
        assert count(block, nn.Conv2d) == 1
    assert result.report.params_after < result.report.params_before
    assert result.report.flops_after < result.report.flops_before
    fired = result.report.fired()
    assert fired["parallel_branches"] == 4 and fired["norm_linear"] == 1


def test_input_model_not_mutated(demo):
    model, x = demo
    before = copy.deepcopy(model.state_dict())
    reparam.deploy(model, x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count(model, nn.BatchNorm2d) > 0


def test_inplace_rewrites_the_model(demo):
    model, x = demo
    ref = model(x)
    out = reparam.deploy(model, x, inplace=True)
    assert out is model
    assert relerr(ref, model(x)) <= 1e-9


def test_idempotent(demo):
    model, x = demo
    once = reparam.deploy(model, x)
    result = reparam.deploy_with_report(once, x)
    assert result.report.rewrites == []
    assert once.state_dict().keys() == result.model.state_dict().keys()


def test_class_and_methods_kept(demo):
    model, x = demo
    deployed = reparam.deploy(model, x)
    assert isinstance(deployed, DemoNet)
    assert isinstance(deployed.stages[0], RepVGGStyleBlock)
    assert relerr(model.forward_features(x), deployed.forward_features(x)) <= 1e-9


def test_save_load_and_deepcopy(demo):
    model, x = demo
    deployed = reparam.deploy(model, x)
    assert relerr(model(x), reloaded(deployed)(x)) <= 1e-9
    assert relerr(model(x), copy.deepcopy(deployed)(x)) <= 1e-9


def test_deployed_state_dict_keeps_surviving_paths(demo):
    model, x = demo
    deployed = reparam.deploy(model, x)
    keys = set(deployed.state_dict())
    assert "stages.0.dense.0.weight" in keys and "stages.0.dense.0.bias" in keys
    assert not any(".pointwise." in k or ".identity." in k for k in keys)
    assert set(model.state_dict()) >= {k for k in keys if not k.endswith(".bias")}


def test_training_mode_model_gets_eval_semantics(device):
    model = prepare(DemoNet(channels=8), device).train()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, device=device)
    result = reparam.deploy_with_report(model, x)
    assert model.training  # untouched
    assert not result.model.training
    assert any("training mode" in n for n in result.report.notes)
    assert relerr(model.eval()(x), result.model(x)) <= 1e-9


def test_without_example_inputs(device):
    model = prepare(DemoNet(channels=8), device)
    deployed = reparam.deploy(model)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, device=device)
    assert relerr(model(x), deployed(x)) <= 1e-9


def test_bad_input_is_a_clear_error():
    with pytest.raises(reparam.ReparamError, match="nn.Module"):
        reparam.deploy(lambda x: x)


def test_torch_export_and_onnx(device, tmp_path):
    model = prepare(DemoNet(channels=8), device, dtype=torch.float32)
    x = torch.randn(1, 3, 16, 16, device=device)
    deployed = reparam.deploy(model, x)
    exported = torch.export.export(deployed, (x,))
    assert relerr(model(x), exported.module()(x)) <= 1e-5


def test_float32_tolerance(device):
    model = prepare(DemoNet(channels=8), device, dtype=torch.float32)
    x = torch.randn(2, 3, 16, 16, device=device)
    deployed = reparam.deploy(model, x)
    assert relerr(model(x), deployed(x)) <= 1e-5


def test_explain_names_fired_and_refused(device):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)

        def forward(self, x):
            return self.a(x)[..., ::2, ::2] + self.b(x)

    model = Block().double().to(device).eval()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, device=device)
    explanation = reparam.explain(model, x)
    assert explanation.fired() == []
    text = str(explanation)
    assert isinstance(text, str)


def test_channels_last_model(device):
    model = prepare(DemoNet(channels=8), device, dtype=torch.float32)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16, device=device).to(memory_format=torch.channels_last)
    result = reparam.deploy_with_report(model, x)
    assert relerr(model(x), result.model(x)) <= 1e-5
    conv = result.model.stages[0].dense[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert any("channels_last" in n for n in result.report.notes)


def test_unfolded_norms_reported_once_with_reason(device):
    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(torch.relu(self.conv(x)))

    model = prepare(nn.Sequential(Tail()), device)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    report = reparam.deploy_with_report(model, x).report
    assert len(report.unfolded_norms) == 1
    assert report.unfolded_norms[0][0].endswith("norm")


def test_refusals_listed_once_per_site(device):
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3,
                                                                                  padding=1)))

        def forward(self, x):
            return self.inner(x)

    model = prepare(Deep(), device)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    refusals = reparam.deploy_with_report(model, x).report.refusals
    keys = [(o.rule, o.site) for o in refusals]
    assert len(keys) == len(set(keys)) == 1


def test_other_methods_never_silently_wrong_after_norm_folds(device):
    """Methods other than forward that call a folded norm fail loudly: the conv it was folded
    into may carry other folds too (here both norms), so running it alone would be wrong."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.norm, self.head = nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.norm(self.bn(self.conv(x))).mean((2, 3)))

        def features(self, x):
            return self.bn(self.conv(x))

    model = prepare(Net(), device)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, device=device)
    deployed = reparam.deploy(model, x)
    assert relerr(model(x), deployed(x)) <= 1e-9
    with pytest.raises(AttributeError):
        deployed.features(x)


def test_failed_inplace_deploy_leaves_the_model_untouched(device):
    from reparam.rules.parallel_branches import MergeParallelBranches

    class Wrong(MergeParallelBranches):
        name = "wrong_branches"

        def check(self, m, ctx):
            plan = super().check(m, ctx)
            if plan:
                with torch.no_grad():
                    plan.module.weight.mul_(2.0)
            return plan

    model = prepare(DemoNet(channels=8), device)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, device=device)
    before = copy.deepcopy(model.state_dict())
    rules = reparam.RuleRegistry([reparam.default_registry().get("conv_norm"), Wrong()])
    with pytest.raises(reparam.ReparamError, match="differs"):
        reparam.deploy(model, x, inplace=True, rules=rules)
    assert type(model) is DemoNet
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class _ScaledByContainers(nn.Module):
    """Channel scales kept in parameter containers (a dict entry is folded away; a list entry
    is folded too, but lists are indexed by position, so it stays)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        scale, shift = torch.rand(1, 4, 1, 1) + 0.5, torch.randn(2)
        self.p = nn.ParameterDict({"scale": nn.Parameter(scale), "shift": nn.Parameter(shift)})
        self.q = nn.ParameterList([nn.Parameter(torch.randn(2)), nn.Parameter(torch.rand(4, 1, 1))])

    def forward(self, x):
        y = self.bn(self.conv(x)) * self.p["scale"] * self.q[1]
        return y + self.p.shift.sum() + self.q[0].sum()


def test_scales_in_parameter_containers_fold_and_the_containers_stay_whole():
    torch.manual_seed(0)
    model = _ScaledByContainers().eval()
    x = torch.randn(2, 3, 8, 8)
    result = reparam.deploy_with_report(model, x)
    deployed = result.model
    assert "conv_norm" in result.report.fired()
    assert "p.scale" not in dict(deployed.named_parameters())
    assert list(deployed.p.keys()) == ["shift"]
    assert len(deployed.q) == 2 and deployed.q[1] is not None
    repr(deployed)  # every container still lists what it holds
    assert list(model.p.keys()) == ["scale", "shift"]  # the user's model untouched
    for inputs in (x, torch.randn(1, 3, 5, 7)):
        assert relerr(model(inputs), deployed(inputs)) <= 1e-5
    assert relerr(model(x), reloaded(deployed)(x)) <= 1e-5
    assert relerr(model(x), copy.deepcopy(deployed)(x)) <= 1e-5

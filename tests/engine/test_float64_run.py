"""Running a module in float64 without a float64 copy (reparam.float64_run): the same
outputs as a float64 deep copy, the module's own tensors never written, and the check's
reference borrows the user's weights instead of copying them."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reparam
from reparam.float64_run import float64_reads, sees_whole_forward
from reparam.inputs import copy_model
from reparam.verify import float64_default, float64_error, run, run_in_float64


class Functional(nn.Module):
    """Weights read the ways other people's forwards read them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.randn(4))
        self.register_buffer("offset", torch.randn(1, 4, 1, 1))
        self.fc = nn.Linear(4, 5)
        self.norm = nn.LayerNorm(5)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y = F.conv2d(y, self.conv.weight[:, :1].repeat(1, 4, 1, 1) / 4, None, padding=1)
        y = y * self.scale.view(1, -1, 1, 1) + self.offset
        y = torch.cat([y, self.offset.expand_as(y)], 1)[:, :4]
        assert self.scale.dtype == y.dtype  # a float64 copy says float64
        y = y.to(self.fc.weight.dtype).mean((2, 3))
        z = F.linear(y, self.fc.weight, self.fc.bias)
        z = z + self.fc.weight.new_ones(()) * self.fc.weight.shape[0]
        return self.norm(z) + y.sum(1, keepdim=True) * self.scale.data.sum()


class CountsCalls(nn.Module):
    """A forward that writes its own float buffers (in place, and by ``+=``, which rebinds
    the attribute), then reads them back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("total", torch.ones(()))

    def forward(self, x):
        self.calls.add_(1)
        self.calls.mul_(3)
        self.total += self.calls
        return self.conv(x) * self.calls + self.total


def _float64_copy_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with float64_default():
        return run(copy.deepcopy(module).double(), (x.double(),))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_same_outputs_as_a_float64_copy(dtype):
    torch.manual_seed(0)
    module = Functional().eval().to(dtype)
    x = torch.randn(2, 3, 6, 5, dtype=dtype)
    expected = _float64_copy_output(module, x)
    before = _state(module)
    with float64_default():
        got = run_in_float64(module, (x,))
    assert got.dtype == torch.float64
    assert torch.equal(got, expected)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(after[k].dtype == before[k].dtype for k in before)
    assert all(p.dtype == dtype for p in module.parameters())


def test_writes_reach_the_cast_for_the_rest_of_the_run_and_never_the_module():
    module = CountsCalls().eval()
    x = torch.randn(1, 3, 4, 4)
    expected = _float64_copy_output(module, x)  # the copy's buffers end at 3 and 4
    with float64_default():
        got = run_in_float64(module, (x,))
    assert torch.equal(got, expected)
    assert float(module.calls) == 0.0 and module.calls.dtype == torch.float32
    assert float(module.total) == 1.0 and module.total.dtype == torch.float32
    with float64_default():
        again = run_in_float64(module, (x,))
    assert torch.equal(again, expected)  # each run starts from the module's own values


def test_data_assignment_goes_to_the_cast():
    class SetsData(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            self.w.data = self.w.data * 3
            return x * self.w

    module = SetsData()
    with float64_default(), torch.no_grad():
        got = run_in_float64(module, (torch.ones(3),))
    assert got.tolist() == [3.0, 3.0, 3.0] and got.dtype == torch.float64
    assert module.w.tolist() == [1.0, 1.0, 1.0] and module.w.dtype == torch.float32


@pytest.mark.parametrize("cached", [0, 2])
def test_weight_copies_alive_at_once_are_one_plus_the_cache(cached):
    """The point of the mode: no float64 copy of the whole model, one layer's at most, or as
    many as its cache of recent copies holds (``cache_bytes``, the one being read included)."""
    layers = nn.Sequential(*[nn.Linear(64, 64) for _ in range(6)]).eval()
    alive, peak = set(), [0]
    mode = float64_reads(layers, cache_bytes=cached * (64 * 64 + 64) * 8)
    read = mode._read

    def tracked(t):
        cast = read(t)
        if cast.numel() == 64 * 64 and id(cast) not in alive:
            key = id(cast)
            alive.add(key)
            peak[0] = max(peak[0], len(alive))
            weakref.finalize(cast, alive.discard, key)
        return cast

    mode._read = tracked
    with float64_default(), mode:
        out = run(layers, (torch.randn(2, 64, dtype=torch.float64),))
    assert out.dtype == torch.float64
    assert peak[0] == max(1, cached)


def test_torchscript_child_runs_on_a_float64_copy():
    module = nn.Sequential(torch.jit.script(nn.Linear(3, 3)), nn.ReLU()).eval()
    assert not sees_whole_forward(module)
    x = torch.randn(2, 3)
    with float64_default():
        got = run_in_float64(module, (x,))
    assert torch.equal(got, _float64_copy_output(module, x))
    assert next(module.parameters()).dtype == torch.float32


def test_float64_error_sees_a_wrong_weight():
    torch.manual_seed(0)
    module = Functional().eval()
    other = copy.deepcopy(module)
    x = torch.randn(2, 3, 6, 5)
    assert float64_error(module, other, (x,)) == 0.0
    with torch.no_grad():
        other.fc.weight[0, 0] += 1e-6
    assert float64_error(module, other, (x,)) > 1e-9


def test_borrowing_copy_shares_only_what_the_mode_casts():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    model[1].register_buffer("exact", torch.ones(4, dtype=torch.float64))
    borrowed = copy_model(model, borrow=True)
    assert borrowed[0] is not model[0]
    assert borrowed[0].weight is model[0].weight and borrowed[1].running_var is model[1].running_var
    # float64 and integer tensors are never cast, so they are copied
    assert borrowed[1].exact is not model[1].exact
    assert borrowed[1].num_batches_tracked is not model[1].num_batches_tracked
    assert copy_model(model)[0].weight is not model[0].weight


class Counter(nn.Module):
    """Counts its calls in a float buffer (``+=`` rebinds it): kept as an opaque leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return x


class CountedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.counter = Counter()

    def forward(self, x):
        return self.counter(self.bn(self.conv(x)))


def test_checks_leave_the_users_model_and_the_deployed_one_as_they_were():
    torch.manual_seed(0)
    model = CountedBlock().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
    before = _state(model)
    result = reparam.deploy_with_report(model, torch.randn(2, 3, 8, 8))
    assert result.report.checked_scopes >= 1  # the block's check ran the counter
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    deployed = result.model
    assert deployed.counter.calls.dtype == torch.float32
    calls = float(deployed.counter.calls)
    x = torch.randn(1, 3, 5, 5)
    outputs_before = model(x)
    assert torch.allclose(deployed(x), outputs_before, rtol=1e-5, atol=1e-6)
    assert float(deployed.counter.calls) == calls + 1


class UsageStats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("usage", torch.zeros(4))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


class Reporter(nn.Module):
    """Holds a sibling without registering it (a back-reference) and writes into it: kept as
    a call (its writes are its own), so the block around it still merges and is checked."""

    def __init__(self, stats: UsageStats) -> None:
        super().__init__()
        object.__setattr__(self, "stats", stats)
        self.seen: list[torch.dtype] = []

    def forward(self, y):
        self.stats.usage += 1
        self.stats.steps.add_(1)
        self.seen.append(y.dtype)
        return y


class ReportingBlock(nn.Module):
    def __init__(self, stats: UsageStats) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.reporter = Reporter(stats)

    def forward(self, x):
        return self.reporter(self.bn(self.conv(x)))


class StatsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stats = UsageStats()
        self.block = ReportingBlock(self.stats)
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.head(self.block(x))


def _stats_net(dtype: torch.dtype) -> StatsNet:
    torch.manual_seed(0)
    model = StatsNet().eval().to(dtype)
    with torch.no_grad():
        model.block.bn.running_mean.normal_()
        model.block.bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_tensor_reached_outside_the_checked_module_is_not_the_users(dtype):
    model = _stats_net(dtype)
    before = _state(model)
    result = reparam.deploy_with_report(model, torch.randn(2, 4, 6, 6, dtype=dtype))
    assert result.report.fired()["conv_norm"] == 1 and result.report.checked_scopes >= 1
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.block.reporter.seen == []
    assert result.model.stats.usage.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checks_leave_no_trace_in_the_deployed_model(dtype):
    """The deployed model's state is the same with and without the float64 checks: integer
    counters, float buffers and list attributes included."""
    model = _stats_net(dtype)
    x = torch.randn(2, 4, 6, 6, dtype=dtype)
    checked = reparam.deploy_with_report(model, x, check=True, verify=True)
    unchecked = reparam.deploy_with_report(model, x, check=False)
    assert checked.report.checked_scopes >= 1
    a, b = checked.model.state_dict(), unchecked.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert checked.model.block.reporter.seen == unchecked.model.block.reporter.seen
    calls = int(checked.model.stats.steps)
    checked.model(x)
    assert int(checked.model.stats.steps) == calls + 1  # the reporter still reports


def test_a_weight_read_row_by_row_is_copied_once_and_writes_through_views_are_seen():
    class RowByRow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(64, 8))
            self.register_buffer("b", torch.ones(4))

        def forward(self, x):
            self.b[:2].fill_(3.0)  # a write through a view
            rows = [x @ self.w[i] for i in range(self.w.shape[0])]
            return torch.stack(rows, -1) * self.b.sum()

    module = RowByRow()
    x = torch.randn(3, 8)
    mode = float64_reads(module)
    read, copies = mode._read, []

    def counted(t):
        out = read(t)
        if t is module.w and not any(out is c for c in copies):
            copies.append(out)
        return out

    mode._read = counted
    with float64_default(), torch.no_grad(), mode:
        got = module(x.double())
    assert len(copies) == 1
    assert torch.equal(got, _float64_copy_output(module, x))
    assert module.b.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_complex_parameters_deploy():
    class GlobalFilter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.filt = nn.Parameter(torch.randn(3, 8, 5, dtype=torch.cfloat))

        def forward(self, x):
            y = torch.fft.rfft2(self.bn(self.conv(x)), norm="ortho") * self.filt
            return torch.fft.irfft2(y, s=(8, 8), norm="ortho")

    torch.manual_seed(0)
    model = GlobalFilter().eval()
    x = torch.randn(1, 3, 8, 8)
    result = reparam.deploy_with_report(model, x)
    assert result.report.fired() == {"conv_norm": 1}
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-6)

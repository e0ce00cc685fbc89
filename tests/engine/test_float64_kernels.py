"""The check's faster float64 paths agree with torch's own kernels, and step aside for calls
they do not cover."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from reparam import float64_run
from reparam.float64_kernels import pointwise_conv2d
from reparam.float64_run import float64_reads
from reparam.verify import run_in_float64


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype and a.is_contiguous()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.integers(1, 3),
    c_per_group=st.integers(1, 4),
    o_per_group=st.integers(1, 4),
    bias=st.booleans(),
    unbatched=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_conv2d(n, groups, c_per_group, o_per_group, bias, unbatched, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    c, o = groups * c_per_group, groups * o_per_group
    x = torch.randn(n, c, 1, 1, generator=g, dtype=torch.float64)
    if unbatched:
        x = x[0]
    weight = torch.randn(o, c_per_group, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    got = pointwise_conv2d((x, weight, b), {"groups": groups})
    assert got is not None
    _close(got, F.conv2d(x, weight, b, groups=groups))


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w, b: ((x, w, b, 1, 0, 1, 1), {}),
        lambda x, w, b: ((x, w), {"bias": b, "stride": (1, 1), "padding": "same"}),
        lambda x, w, b: ((x, w, b), {"padding": "valid", "dilation": 3}),
        lambda x, w, b: ((), {"input": x, "weight": w, "bias": b, "padding": [0, 0]}),
    ],
    ids=["positional", "same", "valid-dilated", "keywords"],
)
def test_every_way_of_writing_the_call(call) -> None:
    x = torch.randn(2, 6, 1, 1, dtype=torch.float64)
    w = torch.randn(5, 6, 1, 1, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    args, kwargs = call(x, w, b)
    got = pointwise_conv2d(args, kwargs)
    assert got is not None
    _close(got, F.conv2d(*args, **kwargs))


@pytest.mark.parametrize(
    "change",
    [
        "float32",
        "kernel3",
        "stride2",
        "padding1",
        "strided_input",
        "wrong_channels",
        "wrong_groups",
        "bias_shape",
        "five_d",
        "too_many_args",
        "twice",
        "many_pixels",
    ],
)
def test_steps_aside(change: str) -> None:
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    w = torch.randn(6, 4, 1, 1, dtype=torch.float64)
    args: tuple = (x, w, None)
    kwargs: dict = {}
    if change == "float32":
        args = (x.float(), w.float(), None)
    elif change == "kernel3":
        args = (x, torch.randn(6, 4, 3, 3, dtype=torch.float64), None)
    elif change == "stride2":
        kwargs = {"stride": 2}
    elif change == "padding1":
        kwargs = {"padding": 1}
    elif change == "strided_input":
        args = (torch.randn(4, 2, 1, 1, dtype=torch.float64).transpose(0, 1), w, None)
    elif change == "wrong_channels":
        args = (torch.randn(2, 3, 1, 1, dtype=torch.float64), w, None)
    elif change == "wrong_groups":
        kwargs = {"groups": 4}
    elif change == "bias_shape":
        args = (x, w, torch.randn(5, dtype=torch.float64))
    elif change == "five_d":
        args = (x[None], w, None)
    elif change == "too_many_args":
        args = (x, w, None, 1, 0, 1, 1, "extra")
    elif change == "twice":
        kwargs = {"input": x}
    elif change == "many_pixels":
        args = (torch.randn(2, 4, 2, 1, dtype=torch.float64), w, None)
    assert pointwise_conv2d(args, kwargs) is None


def test_torch_still_raises_for_a_bad_call_under_the_mode() -> None:
    conv = nn.Conv2d(4, 6, 1)
    with pytest.raises(RuntimeError), torch.no_grad(), float64_reads(conv):
        conv(torch.randn(2, 3, 1, 1, dtype=torch.float64))


def test_a_pointwise_layer_runs_in_float64_as_its_copy_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = []

    def spy(args: tuple, kwargs: dict) -> torch.Tensor | None:
        out = pointwise_conv2d(args, kwargs)
        served.append(out is not None)
        return out

    monkeypatch.setitem(float64_run.KERNELS, torch.conv2d, spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 12, 1, groups=4), nn.ReLU(), nn.Conv2d(12, 3, 1)).eval()
    x = torch.randn(5, 8, 1, 1)
    got = run_in_float64(model, (x,))
    want = model.double()(x.double())
    _close(got, want)
    assert served == [True, True]

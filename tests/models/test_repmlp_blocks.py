"""RepMLP blocks: semantics against explicit per-channel / per-partition definitions, the
reference ordering, partition independence, train-vs-inference equivalence, tracing, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _repmlp_oracle import deploy_state_dict, randomize_bn
from torch import Tensor, nn

from reparam_models import RepMLPNet, create_model
from reparam_models.layers import RepMLP, RepMLPBlock

f64 = torch.float64


def _bn(x: Tensor, bn: nn.Module, idx: int | slice) -> Tensor:
    scale = bn.weight[idx] / torch.sqrt(bn.running_var[idx] + bn.eps)
    return (x - bn.running_mean[idx]) * scale + bn.bias[idx]


def explicit_v2(block: RepMLPBlock, x: Tensor) -> Tensor:
    """The RepMLPNet block by its definition: every channel c of every h x w partition goes
    through share set s = c mod S (an hw x hw matrix + BN channel s + depthwise kernels s)."""
    N, C, H, W = x.shape
    h, w, S = block.h, block.w, block.S
    mats = block.fc3.weight.reshape(S, h * w, h * w)
    out = torch.zeros_like(x)
    for n in range(N):
        for c in range(C):
            s = c % S
            for i in range(H // h):
                for j in range(W // w):
                    patch = x[n, c, i * h:(i + 1) * h, j * w:(j + 1) * w]
                    y = _bn((mats[s] @ patch.reshape(-1)).reshape(h, w), block.fc3_bn, s)
                    for k in block.reparam_conv_k:
                        br = getattr(block, f"repconv{k}")
                        yk = F.conv2d(patch[None, None], br.conv.weight[s:s + 1], padding=k // 2)
                        y = y + _bn(yk[0, 0], br.bn, s)
                    out[n, c, i * h:(i + 1) * h, j * w:(j + 1) * w] = y
    return out * block.gp(x)


def reference_chain_v2(block: RepMLPBlock, x: Tensor) -> Tensor:
    """The reference implementation's tensor chain, restated: partition with
    reshape(-1, C, H/h, h, W/w, w).permute(0, 2, 4, 1, 3, 5), rows of S channels; un-partition with
    reshape(-1, H/h, W/w, S, h, w).permute(0, 3, 1, 4, 2, 5)."""
    N, C, H, W = x.shape
    h, w, S = block.h, block.w, block.S
    hp, wp = H // h, W // w
    parts = x.reshape(-1, C, hp, h, wp, w).permute(0, 2, 4, 1, 3, 5)
    out = block.fc3_bn(block.fc3(parts.reshape(-1, S * h * w, 1, 1)).reshape(-1, S, h, w))
    rows = parts.reshape(-1, S, h, w)
    for k in block.reparam_conv_k:
        out = out + getattr(block, f"repconv{k}")(rows)
    out = out.reshape(-1, hp, wp, S, h, w).permute(0, 3, 1, 4, 2, 5).reshape(N, C, H, W)
    return out * block.gp(x)


def explicit_v1(m: RepMLP, x: Tensor) -> Tensor:
    """The v1 RepMLP by its definition, one partition at a time."""
    N, C, H, W = x.shape
    h, w, g, O = m.h, m.w, m.fc3_groups, m.O
    hp, wp = H // h, W // w
    if m.need_global_perceptron:
        pooled = F.avg_pool2d(x, (h, w))  # (N, C, hp, wp), flattened as (c, i, j)
        pooled = _bn(pooled.permute(0, 2, 3, 1), m.avg.bn, slice(None)).permute(0, 3, 1, 2)
        v = m.fc1_fc2(pooled.reshape(N, -1)).reshape(N, C, hp, wp)
    fc3 = m.fc3.weight.reshape(g, O * h * w // g, C * h * w // g)
    out = torch.zeros(N, O, H, W, dtype=x.dtype)
    for n in range(N):
        for i in range(hp):
            for j in range(wp):
                patch = x[n, :, i * h:(i + 1) * h, j * w:(j + 1) * w]
                if m.need_global_perceptron:
                    patch = patch + v[n, :, i, j][:, None, None]
                groups_in = patch.reshape(g, -1)  # (c, y, x) order, contiguous channel groups
                y = torch.cat([fc3[k] @ groups_in[k] for k in range(g)])
                y = _bn(y, m.fc3_bn, slice(None)).reshape(O, h, w)
                for k in m.reparam_conv_k:
                    br = getattr(m, f"repconv{k}")
                    yk = F.conv2d(patch[None], br.conv.weight, padding=k // 2, groups=g)[0]
                    y = y + _bn(yk.permute(1, 2, 0), br.bn, slice(None)).permute(2, 0, 1)
                out[n, :, i * h:(i + 1) * h, j * w:(j + 1) * w] = y
    return out


def _v2(C: int, S: int, h: int, w: int, k: tuple[int, ...] = (1, 3)) -> RepMLPBlock:
    torch.manual_seed(0)
    return randomize_bn(RepMLPBlock(C, h, w, num_sharesets=S, reparam_conv_k=k)).to(f64).eval()


@pytest.mark.parametrize(
    ("C", "S", "h", "w", "H", "W"),
    [(6, 3, 4, 4, 4, 4), (6, 3, 4, 4, 8, 12), (4, 1, 3, 5, 6, 5), (4, 4, 4, 4, 8, 8)],
)
def test_v2_block_matches_definition(C: int, S: int, h: int, w: int, H: int, W: int) -> None:
    block = _v2(C, S, h, w)
    x = torch.randn(2, C, H, W, dtype=f64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), explicit_v2(block, x), rtol=1e-10, atol=1e-10)


def test_v2_block_matches_reference_chain_at_design_resolution() -> None:
    """One partition per map (the reference's design resolution): identical to the reference's
    channel -> share-set arrangement (channel c uses share set c mod S)."""
    block = _v2(8, 2, 4, 4)
    x = torch.randn(3, 8, 4, 4, dtype=f64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_chain_v2(block, x), rtol=0, atol=1e-12)


def test_v2_block_is_partition_independent() -> None:
    """With several partitions per map each partition is transformed on its own. (The reference
    un-partitions with reshape(-1, H/h, W/w, S, h, w), which mixes partitions and channels
    when S < C and there is more than one partition; we are correct there.)"""
    block = _v2(8, 2, 4, 4)
    with torch.no_grad():
        nn.init.zeros_(block.gp.fc2.weight)  # a constant global gate
        nn.init.constant_(block.gp.fc2.bias, 2.0)
        x = torch.randn(2, 8, 8, 12, dtype=f64)
        y = block(x)
        for i in range(2):
            for j in range(3):
                sl = (..., slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4))
                torch.testing.assert_close(y[sl], block(x[sl]), rtol=0, atol=1e-12)
        assert not torch.allclose(y, reference_chain_v2(block, x))


@pytest.mark.parametrize(
    ("C", "O", "g", "H", "h", "k"),
    [(8, 8, 2, 8, 4, (1, 3)), (8, 16, 4, 8, 4, (1, 3, 5)), (4, 4, 1, 4, 4, (3,)),
     (6, 12, 3, 6, 3, (1, 3))],
)
def test_v1_repmlp_matches_definition(
    C: int, O: int, g: int, H: int, h: int, k: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    m = randomize_bn(RepMLP(C, O, H, H, h, h, reparam_conv_k=k, fc3_groups=g)).to(f64).eval()
    assert m.need_global_perceptron == (H != h)
    x = torch.randn(2, C, H, H, dtype=f64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), explicit_v1(m, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("C", "S", "h", "w", "H", "W", "k"),
    [(8, 2, 4, 4, 8, 8, (1, 3)), (8, 8, 4, 4, 4, 4, (1, 3, 5)), (8, 1, 3, 5, 6, 10, (3,)),
     (16, 4, 2, 2, 4, 4, (1, 3))],
)
def test_v2_inference_form_same_function(
    device: torch.device,
    dtype: torch.dtype,
    C: int, S: int, h: int, w: int, H: int, W: int, k: tuple[int, ...],
) -> None:
    block = _v2(C, S, h, w, k).to(device, dtype)
    infer = RepMLPBlock(C, h, w, num_sharesets=S, reparam_conv_k=k, inference=True)
    infer = infer.to(device, dtype).eval()
    infer.load_state_dict(deploy_state_dict(block))
    x = torch.randn(2, C, H, W, dtype=dtype, device=device)
    tol = 1e-10 if dtype == f64 else 1e-4
    with torch.no_grad():
        torch.testing.assert_close(infer(x), block(x), rtol=tol, atol=tol)


@pytest.mark.parametrize(("C", "O", "g", "H", "h"), [(8, 8, 2, 8, 4), (8, 16, 4, 4, 4)])
def test_v1_inference_form_same_function(
    device: torch.device, C: int, O: int, g: int, H: int, h: int
) -> None:
    torch.manual_seed(0)
    m = randomize_bn(RepMLP(C, O, H, H, h, h, fc3_groups=g)).to(device, f64).eval()
    infer = RepMLP(C, O, H, H, h, h, fc3_groups=g, inference=True).to(device, f64).eval()
    infer.load_state_dict(deploy_state_dict(m))
    x = torch.randn(2, C, H, H, dtype=f64, device=device)
    with torch.no_grad():
        torch.testing.assert_close(infer(x), m(x), rtol=1e-10, atol=1e-10)


def test_block_runs_after_branches_are_deleted() -> None:
    """The engine deletes the repconv branches of a deployed block; forward must cope."""
    block = _v2(8, 2, 4, 4)
    del block.repconv1, block.repconv3
    block(torch.randn(1, 8, 4, 4, dtype=f64))


def _small_net(**kw: object) -> RepMLPNet:
    torch.manual_seed(0)
    return RepMLPNet(channels=(8, 16, 32, 64), num_blocks=(1, 1, 2, 1), hs=(8, 4, 2, 1),
                     num_sharesets=(1, 2, 4, 8), num_classes=10, **kw)  # type: ignore[arg-type]


def test_traced_graph_handles_other_resolutions() -> None:
    """No size is baked into the fx graph: one trace runs at 1x and 2x the design resolution."""
    model = randomize_bn(_small_net()).eval()
    gm = torch.fx.symbolic_trace(model)
    assert not any(n.op == "call_method" and n.target == "size" for n in gm.graph.nodes)
    with torch.no_grad():
        for size in (32, 64):
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(gm(x), model(x))


def test_indivisible_input_raises_value_error_naming_the_block() -> None:
    model = _small_net().eval()
    with pytest.raises(ValueError, match=r"stages\.0\.0\.repmlp_block.*10x10.*8x8"):
        model(torch.randn(1, 3, 40, 40))
    with torch.device("meta"):
        big = create_model("repmlpnet_t224").eval()
        with pytest.raises(ValueError, match=r"stages\.0\.0\.repmlp_block"):
            big(torch.empty(1, 3, 256, 256))
        v1 = create_model("repmlp_res50_bottleneck_224").eval()
        with pytest.raises(ValueError, match=r"stages\.1\.1\.btnk_repmlp.*fixed resolution"):
            v1(torch.empty(1, 3, 256, 256))


def test_invalid_configurations() -> None:
    with pytest.raises(ValueError, match="num_sharesets"):
        RepMLPBlock(6, 4, 4, num_sharesets=4)
    with pytest.raises(ValueError, match="odd"):
        RepMLPBlock(4, 4, 4, reparam_conv_k=(2,))
    with pytest.raises(ValueError, match="divide"):
        RepMLP(4, 4, 10, 10, 4, 4)
    with pytest.raises(ValueError, match="fc3_groups"):
        RepMLP(6, 6, 8, 8, 4, 4, fc3_groups=4)


def test_features_only_and_forward_features() -> None:
    model = _small_net().eval()
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_info.channels() == [8, 16, 32, 64]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert [f.shape[-1] for f in feats] == [64 // r for r in (4, 8, 16, 32)]

    with torch.device("meta"):
        backbone = create_model("repmlpnet_d256", features_only=True).eval()
        out = backbone(torch.empty(1, 3, 512, 1024))  # a segmentation-sized input
    assert isinstance(out, list) and len(out) == 4
    assert [tuple(o.shape) for o in out] == [
        (1, c, 512 // r, 1024 // r) for c, r in zip((80, 160, 320, 640), (4, 8, 16, 32),
                                                     strict=True)
    ]
    assert not any(k.startswith("head") for k in backbone.state_dict())
    with pytest.raises(RuntimeError, match="features_only"):
        backbone.forward_head(out[-1])

    with torch.device("meta"):
        res = create_model("resnet50", features_only=True).eval()
        maps = res(torch.empty(1, 3, 224, 224))
    assert [m.shape[1] for m in maps] == res.feature_info.channels() == [256, 512, 1024, 2048]


def test_num_classes_zero_returns_pooled_features() -> None:
    model = _small_net().eval()
    model_0 = RepMLPNet(channels=(8, 16, 32, 64), num_blocks=(1, 1, 2, 1), hs=(8, 4, 2, 1),
                        num_sharesets=(1, 2, 4, 8), num_classes=0).eval()
    assert model_0(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_block_docstring_cites_papers() -> None:
    import reparam_models.face as face
    import reparam_models.layers as layers
    import reparam_models.repmlp_resnet as res
    import reparam_models.repmlpnet as net

    assert "2112.11081" in (net.__doc__ or "")
    assert "2105.01883" in (res.__doc__ or "") and "2105.01883" in (face.__doc__ or "")
    assert "2105.01883" in (layers.__doc__ or "") and "2112.11081" in (layers.__doc__ or "")

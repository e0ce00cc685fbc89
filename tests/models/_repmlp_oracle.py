"""Test-only oracle: an independent, direct transcription of the RepMLP papers' merge rules.

It turns a training-time model's state_dict into the inference-form state_dict (BN folding into
conv+BN units, Locality Injection into ``fc3``, the v1 pooled BN into ``fc1``, RepMLPNet's
``prebn2`` into the FFN's first 1x1 conv and its ``head_norm`` into the ``head`` Linear). The
package itself has no conversion code (the ``reparam.deploy`` engine does that); the tests use
this oracle to check that the inference form (``inference=True``) computes the same function,
and as a cross-check for the engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reparam.testing import randomize_norms
from reparam_models.layers import ConvBN, RepMLP, RepMLPBlock, RepMLPNetUnit
from reparam_models.repmlpnet import RepMLPNet

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics and affine parameters (so folding matters): the project's
    one randomizer, :func:`reparam.testing.randomize_norms`, seeded with ``seed``."""
    return randomize_norms(model, seed)


def fold_bn(weight: Tensor, bn: nn.Module, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Fold ``bn`` into a conv / FC weight; a BN with fewer channels than the weight's outputs is
    repeated (``repeat_interleave``) over them, as for v2's fc3_bn (S channels, S*h*w outputs)."""
    t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * t
    rep = weight.shape[0] // t.numel()
    t, shift = t.repeat_interleave(rep), shift.repeat_interleave(rep)
    w = weight * t.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else shift + bias * t
    return w, b


def conv_to_fc(kernel: Tensor, in_channels: int, groups: int, h: int, w: int) -> Tensor:
    """The FC matrix of a stride-1 'same' conv on an h x w zero-padded partition.

    Pushes the identity basis through the conv. Returns (O*h*w, in_channels/groups*h*w): rows
    index (out-channel, y, x), columns the input (channel-in-group, y, x) of the row's group.
    """
    n = in_channels // groups * h * w
    eye = torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    eye = eye.reshape(n, in_channels // groups, h, w).repeat(1, groups, 1, 1)
    kh, kw = kernel.shape[-2:]
    out = F.conv2d(eye, kernel, padding=(kh // 2, kw // 2), groups=groups)
    return out.reshape(n, -1).t()


def _merged_local_kernel(block: nn.Module) -> tuple[Tensor, Tensor] | None:
    branches = [getattr(block, f"repconv{k}") for k in block.reparam_conv_k
                if hasattr(block, f"repconv{k}")]
    if not branches:
        return None
    kmax = max(b.conv.kernel_size[0] for b in branches)
    total_k, total_b = None, None
    for b in branches:
        k, bias = fold_bn(b.conv.weight, b.bn)
        pad = (kmax - k.shape[-1]) // 2
        k = F.pad(k, [pad] * 4)
        total_k = k if total_k is None else total_k + k
        total_b = bias if total_b is None else total_b + bias
    return total_k, total_b


@torch.no_grad()
def deploy_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The inference-form state_dict equivalent to ``model`` (training form, eval semantics)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def drop(prefix: str) -> None:
        for k in [k for k in sd if k.startswith(prefix)]:
            del sd[k]

    skip: set[str] = set()
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, RepMLPBlock):
            h, w, S = m.h, m.w, m.S
            wt, b = fold_bn(m.fc3.weight.reshape(S * h * w, h * w), m.fc3_bn)
            local = _merged_local_kernel(m)
            if local is not None:
                wt = wt + conv_to_fc(local[0], S, S, h, w)
                b = b + local[1].repeat_interleave(h * w)
        elif isinstance(m, RepMLP):
            h, w, C, O, g = m.h, m.w, m.C, m.O, m.fc3_groups
            wt, b = fold_bn(m.fc3.weight.reshape(O * h * w, C * h * w // g), m.fc3_bn)
            local = _merged_local_kernel(m)
            if local is not None:
                wt = wt + conv_to_fc(local[0], C, g, h, w)
                b = b + local[1].repeat_interleave(h * w)
            if m.need_global_perceptron:
                fc1, bn = m.fc1_fc2.fc1, m.avg.bn
                t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias - bn.running_mean * t
                rep = m.h_parts * m.w_parts
                sd[f"{p}fc1_fc2.fc1.weight"] = fc1.weight * t.repeat_interleave(rep)[None, :]
                sd[f"{p}fc1_fc2.fc1.bias"] = fc1.bias + fc1.weight @ shift.repeat_interleave(rep)
                drop(f"{p}avg.bn.")
        else:
            continue
        sd[f"{p}fc3.weight"] = wt.reshape(m.fc3.weight.shape)
        sd[f"{p}fc3.bias"] = b
        drop(f"{p}fc3_bn.")
        drop(f"{p}repconv")
        skip.update(f"{p}repconv{k}" for k in m.reparam_conv_k)

    for name, m in model.named_modules():
        if isinstance(m, ConvBN) and name not in skip and isinstance(m.bn, _BN):
            wt, b = fold_bn(m.conv.weight, m.bn, m.conv.bias)
            sd[f"{name}.conv.weight"], sd[f"{name}.conv.bias"] = wt, b
            drop(f"{name}.bn.")

    # Norms *before* a layer: W' = W diag(t), b' = b + W shift (summed over the input). Applied
    # to the already BN-folded weights above (the two folds commute).
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, RepMLPNetUnit) and isinstance(m.prebn2, _BN):
            key = f"{p}ffn_block.ffn_fc1.conv"
            sd[f"{key}.weight"], sd[f"{key}.bias"] = _fold_bn_before(
                sd[f"{key}.weight"], sd[f"{key}.bias"], m.prebn2)
            drop(f"{p}prebn2.")
        if isinstance(m, RepMLPNet) and isinstance(m.head, nn.Linear) and isinstance(
                getattr(m, "head_norm", None), _BN):
            sd[f"{p}head.weight"], sd[f"{p}head.bias"] = _fold_bn_before(
                sd[f"{p}head.weight"], sd[f"{p}head.bias"], m.head_norm)
            drop(f"{p}head_norm.")
    return sd


def _fold_bn_before(weight: Tensor, bias: Tensor, bn: nn.Module) -> tuple[Tensor, Tensor]:
    t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * t
    w2 = weight.reshape(weight.shape[0], -1)  # (O, I) for a 1x1 conv or a linear
    return (w2 * t[None, :]).reshape(weight.shape), bias + w2 @ shift


def expected_inference_keys(train_model: nn.Module) -> set[str]:
    """The inference-form keys, derived from the training-form keys by the layout rules."""
    keys = set(train_model.state_dict())
    skip: set[str] = set()
    for name, m in train_model.named_modules():
        if isinstance(m, (RepMLPBlock, RepMLP)):
            p = f"{name}."
            keys = {k for k in keys if not k.startswith((f"{p}fc3_bn.", f"{p}repconv",
                                                         f"{p}avg.bn."))}
            keys.add(f"{p}fc3.bias")
            skip.update(f"{p}repconv{k}" for k in m.reparam_conv_k)
    for name, m in train_model.named_modules():
        if isinstance(m, ConvBN) and name not in skip:
            keys = {k for k in keys if not k.startswith(f"{name}.bn.")}
            keys.add(f"{name}.conv.bias")
        p = f"{name}." if name else ""
        if isinstance(m, RepMLPNetUnit):
            keys = {k for k in keys if not k.startswith(f"{p}prebn2.")}
        if isinstance(m, RepMLPNet) and isinstance(getattr(m, "head", None), nn.Linear):
            keys = {k for k in keys if not k.startswith(f"{p}head_norm.")}
    return keys


def check_inference_layout(model: nn.Module) -> None:
    """Assert the structural invariants of an inference-form model."""
    for name, m in model.named_modules():
        if isinstance(m, ConvBN):
            assert isinstance(m.bn, nn.Identity), name
            assert m.conv.bias is not None, name
        if isinstance(m, (RepMLPBlock, RepMLP)):
            assert m.fc3.bias is not None, name
            assert isinstance(m.fc3_bn, nn.Identity), name
            assert not any(n.startswith("repconv") for n, _ in m.named_children()), name
            if isinstance(m, RepMLP) and m.need_global_perceptron:
                assert isinstance(m.avg.bn, nn.Identity), name
                assert m.fc1_fc2.fc1.bias is not None, name
        if isinstance(m, RepMLPNetUnit):
            assert isinstance(m.prebn2, nn.Identity), name
            assert isinstance(m.prebn1, nn.BatchNorm2d), name
            assert m.ffn_block.ffn_fc1.conv.bias is not None, name
        if isinstance(m, RepMLPNet) and isinstance(getattr(m, "head", None), nn.Linear):
            assert isinstance(m.head_norm, nn.Identity), name

"""Shrunken configurations of every registered model (same depth and block types, small widths
and resolutions) for real CPU forwards and deploys in the fast test suite."""

from __future__ import annotations

from typing import Any

_SMALL_NET = dict(channels=(8, 16, 32, 64), hs=(8, 4, 2, 1), num_sharesets=(1, 2, 4, 8),
                  img_size=32)
_SMALL_RES = dict(channels=(64, 128, 256, 512), stem_channels=16, img_size=64, h=4)
_SMALL_FACE = dict(channels=(16, 32, 64, 128), stem_channels=8, embedding_dim=32)


def small_kwargs(name: str) -> tuple[dict[str, Any], int]:
    """``(create_model kwargs, input resolution)`` of the shrunken ``name``."""
    if name.startswith("repmlpnet_"):
        return dict(_SMALL_NET, num_classes=10), 32
    if name.startswith(("repmlp_res50", "resnet")):
        return dict(_SMALL_RES, num_classes=10), 64
    if name.startswith(("face_", "repmlp_face")):
        return dict(_SMALL_FACE), 96
    raise AssertionError(f"no small configuration for {name}")

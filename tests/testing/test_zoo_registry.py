"""The zoo's registry: one file per family, each builder registered once."""

from __future__ import annotations

import pytest

from reparam.testing import zoo
from reparam.testing.zoo import registry


def test_every_model_has_a_twin_and_an_input() -> None:
    assert set(zoo.ZOO) == set(zoo.PLAIN_TWINS) == set(zoo.ZOO_INPUT_SHAPES)
    assert {"repvgg", "acnet", "dbb", "mobileone", "replknet_block"} <= set(zoo.ZOO)
    for name, builder in zoo.ZOO.items():
        assert builder.__module__.startswith("reparam.testing.zoo."), name


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.zoo_model("repvgg", (1, 3, 8, 8))(zoo.make_repvgg)
    with pytest.raises(ValueError, match="already has a plain twin"):
        registry.plain_twin("repvgg")(zoo.make_repvgg_plain)
    assert zoo.ZOO["repvgg"] is zoo.make_repvgg

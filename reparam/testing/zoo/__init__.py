"""A zoo of small, complete re-parameterizable models written the way their authors would.

These do not use :mod:`reparam.testing.strategies`: each family is hand-written in its own
idiom (RepVGG's ``rbr_*`` attributes and ``id_out = 0``, ACNet's separate conv/BN attributes,
DBB's BN-and-pad and in-place ``+=``, MobileOne's ``ModuleList`` of over-parameterized
branches, RepLKNet's pre-BN block with a large depthwise kernel, UniRepLKNet's dilated
branches looked up by ``getattr``). Every ``make_*`` returns an eval-mode model in ``dtype``
on the CPU with randomized norms; weights are a pure function of ``seed``.

* :data:`ZOO` -- name -> training-form builder.
* :data:`PLAIN_TWINS` -- name -> builder of the deploy-form architecture (one conv where the
  block had branches): what a merged model should look like structurally. Its weights are
  random, not the merge of the training form.
* :data:`ZOO_INPUT_SHAPES` / :func:`zoo_example_input` -- an input each model accepts.

One file per family (``repvgg``, ``acnet``, ``dbb``, ``mobileone``, ``replknet``,
``unireplknet``); a family registers its builders with ``@zoo_model(name, input_shape)`` and
``@plain_twin(name, ...)`` from :mod:`.registry`. Adding a family is one new file and one
import line here.
"""

from __future__ import annotations

from reparam.testing.zoo.acnet import ACBlock, ACNetCifar, make_acnet, make_acnet_plain
from reparam.testing.zoo.dbb import (
    BNAndPadLayer,
    DBBNet,
    DiverseBranchBlock,
    make_dbb,
    make_dbb_plain,
    make_dbb_slice_assign,
)
from reparam.testing.zoo.mobileone import (
    MobileOneBlock,
    MobileOneNet,
    make_mobileone,
    make_mobileone_plain,
)
from reparam.testing.zoo.registry import (
    PLAIN_TWINS,
    ZOO,
    ZOO_INPUT_SHAPES,
    plain_twin,
    zoo_example_input,
    zoo_model,
)
from reparam.testing.zoo.replknet import (
    ReparamLargeKernelConv,
    RepLKBlock,
    RepLKStage,
    make_replknet_block,
    make_replknet_block_plain,
)
from reparam.testing.zoo.repvgg import RepVGG, RepVGGBlock, make_repvgg, make_repvgg_plain
from reparam.testing.zoo.unireplknet import (
    DilatedReparamBlock,
    UniRepLKBlock,
    make_unireplknet_block,
    make_unireplknet_block_plain,
)

__all__ = [
    "PLAIN_TWINS",
    "ZOO",
    "ZOO_INPUT_SHAPES",
    "ACBlock",
    "ACNetCifar",
    "BNAndPadLayer",
    "DBBNet",
    "DilatedReparamBlock",
    "DiverseBranchBlock",
    "MobileOneBlock",
    "MobileOneNet",
    "RepLKBlock",
    "RepLKStage",
    "RepVGG",
    "RepVGGBlock",
    "ReparamLargeKernelConv",
    "UniRepLKBlock",
    "make_acnet",
    "make_acnet_plain",
    "make_dbb",
    "make_dbb_plain",
    "make_dbb_slice_assign",
    "make_mobileone",
    "make_mobileone_plain",
    "make_replknet_block",
    "make_replknet_block_plain",
    "make_repvgg",
    "make_repvgg_plain",
    "make_unireplknet_block",
    "make_unireplknet_block_plain",
    "plain_twin",
    "zoo_example_input",
    "zoo_model",
]

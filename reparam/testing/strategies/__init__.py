"""Hypothesis strategies that build small, valid-by-construction re-parameterizable modules.

Every strategy draws a :class:`Case`: an ``nn.Module`` in eval mode (float64 unless told
otherwise, on the requested device, with randomized BatchNorm statistics and affine params),
an example input and a human-readable ``description``. Channel counts are drawn per group and
multiplied by the number of groups, kernels are centred, strides and padding modes are made
compatible, so every drawn module runs; sizes stay tiny (channels <= 16, spatial <= 12
(<= 6 in 3-D), batch <= 2) so one example runs in milliseconds.

Public strategies:

* :func:`conv_specs` -- :class:`ConvConfig` s (kernel incl. 1xk/kx1, stride, dilation, groups,
  padding incl. ``'same'``, bias, padding_mode).
* :func:`conv_bn`, :func:`linear_bn`, :func:`bn_linear`, :func:`bn_conv` -- two-layer folds.
* :func:`branch_blocks` -- one input, several parallel branches summed, written in varying
  user styles (RepVGG, ACNet, DBB, MobileOne, RepLKNet / UniRepLKNet-like branch sets).
* :func:`block_stacks` -- stacks of branch blocks, optional activations and a classifier head.
* :func:`refusal_cases` -- modules where a merge would NOT be exact (see :data:`REFUSAL_KINDS`).

``Case.refuse`` is ``True`` when the module contains a pattern whose (naive) merge is not
exact, so the engine must leave it alone; in every case the deployed module must still
reproduce the original outputs. ``Case.tags`` lists the features a case contains (handy for
``hypothesis.event`` or for filtering).

One module per concept: :mod:`.case` (the :class:`Case`, limits, finishing a drawn module),
:mod:`.modules` (the small modules cases are assembled from), :mod:`.convs`, :mod:`.norms`,
:mod:`.branches`, :mod:`.stacks`, :mod:`.refusals`. Strategies for other structures live in
the sibling modules ``strategies_linear``, ``strategies_layout``, ``strategies_affine_branch``
and ``strategies_perpendicular``.
"""

from __future__ import annotations

from reparam.testing._common import randomize_norms, seeded
from reparam.testing.strategies.branches import BRANCH_KINDS, branch_blocks
from reparam.testing.strategies.case import (
    MAX_BATCH,
    MAX_CHANNELS,
    MAX_SPATIAL,
    SUM_STYLES,
    Case,
    check_case,
)
from reparam.testing.strategies.convs import ConvConfig, conv_specs
from reparam.testing.strategies.norms import bn_conv, bn_linear, conv_bn, linear_bn
from reparam.testing.strategies.refusals import REFUSAL_KINDS, refusal_cases
from reparam.testing.strategies.stacks import block_stacks

__all__ = [
    "BRANCH_KINDS",
    "MAX_BATCH",
    "MAX_CHANNELS",
    "MAX_SPATIAL",
    "REFUSAL_KINDS",
    "SUM_STYLES",
    "Case",
    "ConvConfig",
    "block_stacks",
    "bn_conv",
    "bn_linear",
    "branch_blocks",
    "check_case",
    "conv_bn",
    "conv_specs",
    "linear_bn",
    "randomize_norms",
    "refusal_cases",
    "seeded",
]

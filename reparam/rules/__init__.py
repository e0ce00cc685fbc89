"""Merge rules: one rule per file, registered in :data:`BUILTIN_RULES` order."""

from __future__ import annotations

# -- rules-b: linear structures across layouts, shared norms, perpendicular kernels --------
from reparam.rules.affine_branch_fc import AffineBranchIntoFc
from reparam.rules.base import PatternRule, Rewrite, Rule, RuleContext
from reparam.rules.border_fill import BorderFillAsPad
from reparam.rules.computed_weights import ComputedWeightsAsLayer
from reparam.rules.concat_convs import MergeConcatConvs
from reparam.rules.conv_norm import FoldNormAfterConv
from reparam.rules.grouped_fc import GroupedFcAsBmm
from reparam.rules.linear_norm import FoldNormAfterLinear
from reparam.rules.locality_injection import LocalityInjection
from reparam.rules.norm_after_layout import FoldNormAfterLayout
from reparam.rules.norm_conv import FoldNormBeforeConv
from reparam.rules.norm_into_consumers import FoldNormIntoConsumers

# -- end rules-b -----------------------------------------------------------------------
from reparam.rules.norm_linear import FoldNormBeforeLinear
from reparam.rules.pad_into_conv import FoldPadIntoConv
from reparam.rules.pad_through_pointwise import PadThroughPointwise
from reparam.rules.parallel_branches import MergeParallelBranches
from reparam.rules.parallel_linears import MergeParallelLinears
from reparam.rules.perpendicular_convs import MergePerpendicularConvs
from reparam.rules.registry import RuleRegistry
from reparam.rules.sequential_convs import MergeSequentialConvs
from reparam.rules.transposed_conv_norm import FoldNormAfterTransposedConv

BUILTIN_RULES: tuple[type[Rule], ...] = (
    # -- linear structures (issue 8, part A): canonical layers first ---------------------
    ComputedWeightsAsLayer,
    FoldNormAfterTransposedConv,
    MergeParallelLinears,
    # -- end of part A ----------------------------------------------------------------
    FoldNormAfterConv,
    FoldNormAfterLinear,
    LocalityInjection,
    BorderFillAsPad,
    PadThroughPointwise,
    MergeSequentialConvs,
    MergeConcatConvs,
    MergeParallelBranches,
    FoldPadIntoConv,
    FoldNormBeforeLinear,
    FoldNormBeforeConv,
    # -- rules-b --
    FoldNormAfterLayout,
    FoldNormIntoConsumers,
    MergePerpendicularConvs,
    AffineBranchIntoFc,
    # -- end rules-b --
    GroupedFcAsBmm,
)

_DEFAULT: RuleRegistry | None = None


def default_registry() -> RuleRegistry:
    """The registry ``deploy`` uses unless told otherwise (built-ins + user rules)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = RuleRegistry(cls() for cls in BUILTIN_RULES)
    return _DEFAULT


def register_rule(rule: Rule | type[Rule], *, before: str | None = None) -> Rule:
    """Add a rule to the default registry (a duplicate name is an error)."""
    return default_registry().register(rule, before=before)


def unregister_rule(name: str) -> None:
    default_registry().unregister(name)


def list_rules() -> list[Rule]:
    return list(default_registry())


__all__ = [
    "BUILTIN_RULES",
    "PatternRule",
    "Rewrite",
    "Rule",
    "RuleContext",
    "RuleRegistry",
    "default_registry",
    "list_rules",
    "register_rule",
    "unregister_rule",
]

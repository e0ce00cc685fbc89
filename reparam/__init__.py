"""reparam: structural re-parameterization for any PyTorch model.

``reparam.deploy(model)`` returns an equivalent inference model in which every training-time
multi-branch structure that is a linear map (conv+BN, RepVGG/ACNet/DBB/MobileOne/RepLKNet
branches, RepMLP's convs beside an FC) is merged into one conv or FC.
"""

from reparam.deploy import DeployResult, deploy, deploy_with_report
from reparam.errors import NotEquivalentError, Refusal, ReparamError
from reparam.explain import Explanation, explain
from reparam.report import DeployReport
from reparam.rules import (
    PatternRule,
    Rewrite,
    Rule,
    RuleContext,
    RuleRegistry,
    default_registry,
    list_rules,
    register_rule,
    unregister_rule,
)
from reparam.verify import assert_equivalent, relative_error

__version__ = "0.1.0"

__all__ = [
    "DeployReport",
    "DeployResult",
    "Explanation",
    "NotEquivalentError",
    "Refusal",
    "ReparamError",
    "Rewrite",
    "PatternRule",
    "Rule",
    "RuleContext",
    "RuleRegistry",
    "assert_equivalent",
    "default_registry",
    "deploy",
    "deploy_with_report",
    "explain",
    "list_rules",
    "register_rule",
    "relative_error",
    "unregister_rule",
]

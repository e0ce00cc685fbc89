"""Public test helpers for re-parameterization engines.

* :mod:`reparam.testing.strategies` -- hypothesis strategies drawing small, valid-by-construction
  modules (conv+BN folds, multi-branch blocks in many user styles, stacks, refusal cases).
  Needs ``hypothesis`` (a test dependency), so it is not imported here.
* :mod:`reparam.testing.zoo` -- hand-written RepVGG / ACNet / DBB / MobileOne / RepLKNet /
  UniRepLKNet-like models with plain deploy-form twins.
* :mod:`reparam.testing.oracle` -- a black-box check that a module is exactly one
  zero-padded conv (impulse-response probing).
"""

from reparam.testing._common import randomize_norms, seeded

__all__ = ["randomize_norms", "seeded"]

"""Train any zoo model with torch DDP: ``python -m reparam_models.train`` or ``torchrun``.

One entry point for one process, several processes on one machine
(``torchrun --standalone --nproc_per_node=N -m reparam_models.train``) and several machines
(torchrun's rendezvous flags). With no arguments it trains the nano RepMLPNet
(``repmlpnet_n32``) on scikit-learn's digits, which ship inside that package, then deploys the
result with :func:`reparam.deploy` and reports the top-1 of both forms and the fraction of
identical predictions.

Modules, one concept each:

* :mod:`.cli` -- arguments, the one-line usage errors (exit code 2), ``main``.
* :mod:`.distributed` -- process group set-up from torchrun's environment, gathers.
* :mod:`.data` -- the built-in digits set, ``ImageFolder`` data, transforms, samplers, pairs.
* :mod:`.recipe` -- the RepMLPNet training recipe on timm's optimizer, scheduler, mixup,
  loss and EMA utilities.
* :mod:`.checkpoint` -- atomic every-epoch checkpoints and resume.
* :mod:`.loop` -- one training epoch, evaluation, deploy and comparison.
* :mod:`.run` -- the whole run, wiring the above together.

Needs the ``train`` extra (timm, torchvision, scikit-learn).
"""

from __future__ import annotations

from .cli import UsageError, main, train

__all__ = ["UsageError", "main", "train"]

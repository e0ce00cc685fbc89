"""``python -m reparam_models.train`` (also ``torchrun ... -m reparam_models.train``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

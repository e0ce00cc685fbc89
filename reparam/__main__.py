"""``python -m reparam``: the command line (see :mod:`reparam.cli`)."""

import sys

from reparam.cli import main

if __name__ == "__main__":
    sys.exit(main())

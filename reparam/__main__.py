import sys

from reparam.cli import main

sys.exit(main())

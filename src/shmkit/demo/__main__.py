"""``python -m shmkit.demo``: the same as ``shmkit demo``."""

import sys

from . import main

sys.exit(main())

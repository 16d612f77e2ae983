"""``python -m shmkit``: the shmkit command (see shmkit.cli)."""

import sys

from .cli import main

sys.exit(main())

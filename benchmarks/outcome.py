"""What can become of a case: its status, its kind, and Unavailable (a case that cannot
run).  A module of its own so that both the harness and redis_server use it without
importing each other."""

from __future__ import annotations

# statuses of a case
OK = "ok"
MISSING = "missing"                 # an anchor package is not installed
NOT_YET = "not available yet"       # shmkit's side is not built (yet)
SKIPPED = "skipped"                 # cannot run on this machine (no redis-server, OS limit)
ERROR = "error"                     # it ran and failed (crash, timeout, wrong result)

ANCHOR = "anchor"        # what a user would pick instead of shmkit
REFERENCE = "reference"  # not an alternative, a yardstick (in-process memcpy, plain dict)
SHMKIT = "shmkit"

KINDS = (ANCHOR, REFERENCE, SHMKIT)


class Unavailable(Exception):
    """A case cannot run; ``status`` says why (MISSING, NOT_YET, SKIPPED)."""

    def __init__(self, status: str, note: str):
        super().__init__(status, note)
        self.status = status
        self.note = note

"""What the ``shmkit`` command and the command-line part of the Redis backend share: the
exit codes, the error that carries one, and sizes as people read them.

``shmkit.cli`` re-exports these names (``cli.EXIT_USAGE``, ``cli.CliError``).  They live
down here so that ``shmkit.redis._cli``, which ``shmkit.cli`` calls for ``--url``, needs
no import back up into the command line.

Bottom layer: imports nothing of shmkit; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_NOT_FOUND", "EXIT_PERMISSION",
           "EXIT_REFUSED", "EXIT_ERROR", "EXIT_INTERRUPTED", "CliError", "human_bytes"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_REFUSED = 5
EXIT_ERROR = 6
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def human_bytes(n: float) -> str:
    """``n`` bytes as people read them: ``512 B``, ``1.5 MiB``, ``3.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

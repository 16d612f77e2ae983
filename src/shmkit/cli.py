"""The ``shmkit`` command.

Only ``shmkit bench`` lives here so far (the benchmark suite, benchmarks/); the segment
tools (ls, info, check, rm, gc, dump, doctor) come with the segments work, whose cli.py
supersedes this file.
"""

from __future__ import annotations

import sys

USAGE = "usage: shmkit bench [--quick] [--only SCENARIO] [--json FILE] [--plot FILE.png] ... (shmkit bench --help)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        try:
            from benchmarks.__main__ import main as bench_main
        except ImportError as exc:
            print(f"shmkit bench: the benchmark suite is not installed here ({exc}); "
                  "run it from a source checkout (pip install -e '.[bench]')", file=sys.stderr)
            return 3
        return bench_main(argv[1:], prog="shmkit bench")
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

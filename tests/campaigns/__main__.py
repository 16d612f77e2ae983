"""``python -m tests.campaigns NAME [--seconds S] [--seed N] [--json PATH]`` (run from
the repository root, with shmkit importable: ``.venv/bin/python``).

    kill      SIGKILL lock holders, queue producers/consumers and dict writers at random
              points; exact accounting of what was acknowledged
    corrupt   random mutations of a zone holding every object kind; every operation in a
              fresh process; ok / exception / raw / signal / hang  (--sanitize: ASan build)
    apifuzz   every public call with hostile arguments (Hypothesis)
    fullshm   a full /dev/shm in a private mount namespace: NoSpaceError, never SIGBUS
    soak      several processes for a while: RSS, fds, /dev/shm and SysV leftovers
    perms     permissions and a second user created for the run (root only)
    all       each of them in turn, the seconds split between them

Exit status: 0 when the campaign found nothing it must not find, 1 otherwise, 2 on bad
usage, 3 when it could not run here (the reason is printed; e.g. perms without root).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

CAMPAIGNS = ("kill", "corrupt", "apifuzz", "fullshm", "soak", "perms")


class CannotRun(Exception):
    """The campaign cannot run on this machine (not root, no unshare...)."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.campaigns",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("campaign", choices=CAMPAIGNS + ("all",))
    p.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the time)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sanitize", action="store_true",
                   help="corrupt: run the trials against an ASan/UBSan build")
    p.add_argument("--workers", type=int, default=2, help="parallel trial processes")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    names = CAMPAIGNS if args.campaign == "all" else (args.campaign,)
    each = args.seconds / len(names)
    results, worst = [], 0
    for name in names:
        mod = importlib.import_module(f"tests.campaigns.{name}")
        kw = {}
        if name == "corrupt":
            kw = {"sanitize": args.sanitize, "workers": args.workers}
        try:
            rep = mod.run(each, seed, **kw)
        except CannotRun as e:
            print(f"{name}: cannot run here: {e}")
            results.append({"campaign": name, "skipped": str(e)})
            worst = max(worst, 3 if len(names) == 1 else 0)
            continue
        rep.print_table()
        results.append(rep.as_dict())
        worst = max(worst, 0 if rep.ok else 1)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=2, default=str)
            f.write("\n")
    return worst


if __name__ == "__main__":
    sys.exit(main())

"""multiprocessing's Value, Array and Manager, and the shmkit objects that replace them.

    python examples/multiprocessing_port.py

=====================  ====================================  ==============================
multiprocessing        shmkit                                what changes
=====================  ====================================  ==============================
``ctx.Value("q", 0)``  ``zone.value("total", "q", 0)``       found by name by any process;
                                                             a dead lock holder is noticed
``ctx.Array("q", 4)``  ``zone.array("per_worker", "q", 4)``  the same
``Manager().dict()``   ``zone.dict("stats")``                no server process, no proxy
                                                             round trip; ``incr`` is atomic
``Manager().Queue()``  ``zone.queue("done", mode=...)``      no server process
``Manager().Lock()``   ``zone.lock("guard")``                a dead holder is noticed
=====================  ====================================  ==============================

Four spawned workers do the same job twice, once with each set: count into a Value under
its lock, into their own slot of an Array, into a shared dict, and report through a
queue.  The dict shows the lost-update race once more: ``d[k] = d[k] + 1`` through a
Manager's DictProxy is a get and a set (two round trips to the server process), as it is
on a shmkit Dict; ``Dict.incr`` is one atomic operation.  At the end an *unrelated*
process (a plain ``python -c``) finds the shmkit objects by name and reads them: a
multiprocessing Value or Array can only be handed to children when they start, and a
Manager's objects only to whoever has its address and authkey.

Exits 0 only if both sets counted exactly (where they offer a way to), and the unrelated
process read the same figures.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any

import shmkit

WORKERS = 4
N = 1000                                     # operations per worker


def job(total: Any, per_worker: Any, stats: Any, done: Any, lock: Any, index: int) -> None:
    """The same code drives both sets: the objects share their interfaces."""
    for _ in range(N):
        with total.get_lock():
            total.value += 1
        per_worker[index] += 1               # only this worker writes this slot
        with lock:
            stats["locked"] = stats.get("locked", 0) + 1
        stats["racy"] = stats.get("racy", 0) + 1          # get, then set: not atomic
        if hasattr(stats, "incr"):
            stats.incr("atomic", 1, init=0)               # shmkit: one atomic operation
    done.put((index, os.getpid()))


def run(ctx: Any, label: str, objects: tuple[Any, ...]) -> float:
    procs = [ctx.Process(target=job, args=(*objects, i)) for i in range(WORKERS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"FAILED: a {label} worker failed")
    return time.perf_counter() - t0


READ_BY_NAME = """
import sys, shmkit
zone = shmkit.Zone(sys.argv[1], 0, create=False)       # an unrelated process: by name only
total = zone.value("total", "q")
per_worker = zone.array("per_worker", "q", int(sys.argv[2]))
stats = zone.dict("stats")
print(total.value, list(per_worker), stats["locked"], stats["atomic"], zone.queue("done").qsize())
"""


def main() -> int:
    ctx = mp.get_context("spawn")
    expected = WORKERS * N
    problems = []

    manager = ctx.Manager()
    try:
        mp_objects: tuple[Any, ...] = (ctx.Value("q", 0), ctx.Array("q", WORKERS),
                                       manager.dict(), manager.Queue(), manager.Lock())
        took = run(ctx, "multiprocessing", mp_objects)
        total, per_worker, stats, done, _ = mp_objects
        reports = sorted(done.get(timeout=10) for _ in range(WORKERS))
        mp_figures = (total.value, list(per_worker), stats["locked"], stats["racy"])
        lost = {"multiprocessing": expected - stats["racy"]}
        print(f"multiprocessing: Value {total.value}, Array {list(per_worker)}, Manager dict "
              f"locked {stats['locked']}, racy {stats['racy']} "
              f"({expected - stats['racy']} lost), {len(reports)} queue reports, {took:.2f} s")
    finally:
        manager.shutdown()
    if mp_figures[:3] != (expected, [N] * WORKERS, expected) or len(reports) != WORKERS:
        problems.append(f"multiprocessing's locked counts are not exact: {mp_figures}")

    name = f"mp-port-{os.getpid()}"
    zone = shmkit.Zone(name, 8 << 20)
    try:
        sk_objects = (zone.value("total", "q", 0), zone.array("per_worker", "q", WORKERS),
                      zone.dict("stats", 1 << 20), zone.queue("done", 1 << 16, mode="objects"),
                      zone.lock("guard"))
        took = run(ctx, "shmkit", sk_objects)
        total, per_worker, stats, done, _ = sk_objects
        print(f"shmkit:          Value {total.value}, Array {list(per_worker)}, Dict locked "
              f"{stats['locked']}, racy {stats['racy']} ({expected - stats['racy']} lost), "
              f"incr {stats['atomic']}, {done.qsize()} queue reports, {took:.2f} s")
        lost["shmkit"] = expected - stats["racy"]
        sk_figures = (total.value, list(per_worker), stats["locked"], stats["atomic"])
        if sk_figures != (expected, [N] * WORKERS, expected, expected) or \
                done.qsize() != WORKERS:
            problems.append(f"shmkit's exact counts are not exact: {sk_figures}")

        r = subprocess.run([sys.executable, "-c", READ_BY_NAME, name, str(WORKERS)],
                           capture_output=True, text=True, timeout=60)
        print(f"an unrelated process, by name: {r.stdout.strip() or r.stderr.strip()}")
        want = f"{expected} {[N] * WORKERS} {expected} {expected} {WORKERS}"
        if r.returncode != 0 or r.stdout.strip() != want:
            problems.append(f"the unrelated process read {r.stdout.strip()!r}, not {want!r}")
    finally:
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print("OK: Value, Array, Manager dict/queue/lock and their shmkit counterparts counted "
          f"exactly where they can (the racy get-then-set lost {lost['multiprocessing']} and "
          f"{lost['shmkit']} here); an unrelated process found the shmkit objects by name")
    return 0


if __name__ == "__main__":
    sys.exit(main())

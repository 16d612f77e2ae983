"""The lost-update race of a shared integer, in multiprocessing and in shmkit, and the
ways to fix it.

    python examples/lost_update.py [--quick]

Four processes each add 1 to a shared integer N times.  ``x.value += 1`` is a read, an
add and a write: two processes read the same value, both write value + 1, and one
increment is lost.  That is as true of ``multiprocessing.Value(..., lock=False)`` as of
a shmkit Value without a lock (and of ``multiprocessing.Value`` *with* its lock, if the
``+=`` is not inside ``with v.get_lock():`` - the lock only guards single reads and
writes).  The fixes: a critical section around the read-modify-write (the Value's own
lock, in both libraries), or shmkit.Counter, which adds with one atomic instruction.

The children are started with "spawn": multiprocessing's objects are inherited at start;
shmkit's are found by name (they pickle as (zone, name)).  Exits 0 only if every fixed
version is exact (the racy ones lose what they lose: that depends on the machine).
"""

import multiprocessing as mp
import os
import sys
import time
from typing import Any, Callable

import shmkit

PROCS = 4


def plain(v: Any, n: int, go: Any) -> None:
    go.wait()
    for _ in range(n):
        v.value += 1                     # read, add, write: not atomic


def counter(c: Any, n: int, go: Any) -> None:
    go.wait()
    inc = c.inc
    for _ in range(n):
        inc()                            # one atomic add


def locked(v: Any, n: int, go: Any) -> None:
    go.wait()
    lock, obj = v.get_lock(), v.get_obj()
    for _ in range(n):
        with lock:                       # a critical section around the read-modify-write
            obj.value += 1


def run(ctx: Any, zone: shmkit.Zone, target: Callable[..., None], obj: Any, n: int,
        label: str) -> float:
    go = zone.event(f"go: {label}"[:60])       # start together, so that they overlap
    ps = [ctx.Process(target=target, args=(obj, n, go)) for _ in range(PROCS)]
    for p in ps:
        p.start()
    deadline = time.monotonic() + 60
    while go.statistics().waits < PROCS and time.monotonic() < deadline:
        time.sleep(0.01)                 # until every child waits at the gate
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    if any(p.exitcode for p in ps):
        raise SystemExit(f"FAILED: a child of {label!r} failed")
    return time.perf_counter() - t0


def main() -> None:
    n = 20_000 if "--quick" in sys.argv else 100_000
    ctx = mp.get_context("spawn")
    zone = shmkit.Zone(f"lost-update-{os.getpid()}", 1 << 20)
    expected = PROCS * n
    exact: dict[str, bool] = {}
    try:
        def report(label: str, obj: Any, target: Callable[..., None], fixed: bool) -> None:
            took = run(ctx, zone, target, obj, n, label)
            value = obj.get() if isinstance(obj, shmkit.Counter) else obj.value
            lost = expected - value
            if fixed:
                exact[label] = value == expected
                how = f"exact: {value == expected}"
            else:
                how = f"{lost} lost, {100 * lost / expected:.1f}%"
            print(f"{label:<38}: {value:>9} of {expected} ({how}) in {took:.2f} s")

        report("multiprocessing.Value, lock=False", ctx.Value("q", 0, lock=False), plain, False)
        report("shmkit Value, lock=False", zone.value("racy", "q", 0, lock=False), plain, False)
        report("multiprocessing.Value + get_lock()", ctx.Value("q", 0), locked, True)
        report("shmkit Value + get_lock()", zone.value("guarded", "q", 0), locked, True)
        report("shmkit.Counter (atomic add)", zone.counter("count"), counter, True)
    finally:
        zone.close()
        zone.unlink()
    if not all(exact.values()):
        print(f"FAILED: a fixed version lost updates: {exact}", file=sys.stderr)
        sys.exit(1)
    print("OK: the racy versions show the lost updates; every fixed version (locks, atomic "
          "Counter) counted exactly")


if __name__ == "__main__":
    main()

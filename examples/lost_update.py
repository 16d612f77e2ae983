"""The lost-update race of a plain shared integer, and two ways shmkit fixes it.

    python examples/lost_update.py [--quick]

Four processes each add 1 to a shared integer N times.  With a plain shared int,
``x.value += 1`` is a read, an add and a write: two processes read the same value, both
write value + 1, and one increment is lost.  shmkit.Counter adds with one atomic
instruction; shmkit.Value's lock makes the read-modify-write a critical section.
The children are started with "spawn" and find the objects by name (they pickle as
(zone, name)).
"""

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import shmkit

PROCS = 4


def plain(v: shmkit.Value, n: int, go: shmkit.Event) -> None:
    go.wait()
    for _ in range(n):
        v.value += 1                     # read, add, write: not atomic


def counter(c: shmkit.Counter, n: int, go: shmkit.Event) -> None:
    go.wait()
    inc = c.inc
    for _ in range(n):
        inc()                            # one atomic add


def locked(v: shmkit.Value, n: int, go: shmkit.Event) -> None:
    go.wait()
    lock, obj = v.get_lock(), v.get_obj()
    for _ in range(n):
        with lock:                       # a critical section around the read-modify-write
            obj.value += 1


def run(ctx: Any, zone: shmkit.Zone, target: Callable[..., None], obj: object, n: int) -> float:
    go = zone.event(f"go-{target.__name__}")    # start together, so that they overlap
    ps = [ctx.Process(target=target, args=(obj, n, go)) for _ in range(PROCS)]
    for p in ps:
        p.start()
    deadline = time.monotonic() + 60
    while go.statistics().waits < PROCS and time.monotonic() < deadline:
        time.sleep(0.01)                         # until every child waits at the gate
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    return time.perf_counter() - t0


def main() -> None:
    n = 20_000 if "--quick" in sys.argv else 200_000
    ctx = mp.get_context("spawn")
    zone = shmkit.Zone(f"lost-update-{os.getpid()}", 1 << 20)
    try:
        expected = PROCS * n
        racy = zone.value("racy", "q", 0, lock=False)
        took = run(ctx, zone, plain, racy, n)
        lost = expected - racy.value
        print(f"plain shared int : {racy.value:>9} of {expected} ({lost} lost, "
              f"{100 * lost / expected:.1f}%) in {took:.2f} s")

        c = zone.counter("count")
        took = run(ctx, zone, counter, c, n)
        print(f"shmkit.Counter   : {c.get():>9} of {expected} (exact: {c.get() == expected}) "
              f"in {took:.2f} s")

        v = zone.value("guarded", "q", 0)
        took = run(ctx, zone, locked, v, n)
        print(f"Value + its lock : {v.value:>9} of {expected} (exact: {v.value == expected}) "
              f"in {took:.2f} s")
        if c.get() != expected or v.value != expected:
            sys.exit("a fixed version lost updates: this is a bug")
    finally:
        zone.close()
        zone.unlink()


if __name__ == "__main__":
    main()

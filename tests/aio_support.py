"""Helpers of the asyncio tests (tests/test_aio*.py): event loops of both kinds, the
process's threads and CPU time read from /proc, children that act on shared objects."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

LOOPS = ["asyncio", "uvloop"]


def run(coro, loop_kind: str = "asyncio", timeout: float = 60.0):
    """Run coro to its end on a new event loop of that kind, bounded by timeout."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop") if not os.environ.get("CI") else __import__("uvloop")
        return uvloop.run(bounded())
    return asyncio.run(bounded())


def threads() -> int:
    """Threads of this process now (the kernel's count: C threads included)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) from /proc/self/stat."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll predicate() from a coroutine (yielding to the loop) until true."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


# -- children (spawned: module-level functions) ------------------------------------------

def zone_of(zname: str):
    import shmkit
    return shmkit.Zone(zname, 4 << 20)


def hold_lock(zname, lname, kind, held_ev, release_ev, hold_for):
    """Take the lock (kind: lock, rlock, write, read, sem), say so, hold it until
    release_ev is set (or hold_for seconds), release."""
    import shmkit
    z = zone_of(zname)
    if kind in ("lock", "rlock"):
        lk = (shmkit.Lock if kind == "lock" else shmkit.RLock)(lname, zone=z)
        lk.acquire()
        rel = lk.release
    elif kind in ("read", "write"):
        rw = shmkit.RWLock(lname, zone=z)
        (rw.acquire_read if kind == "read" else rw.acquire_write)()
        rel = rw.release_read if kind == "read" else rw.release_write
    else:
        sem = shmkit.Semaphore(lname, 2, zone=z)
        sem.acquire()
        sem.acquire()

        def rel():
            sem.release(2)
    shmkit.Event(held_ev, zone=z).set()
    if release_ev:
        shmkit.Event(release_ev, zone=z).wait(hold_for)
    else:
        time.sleep(hold_for)
    rel()


def hold_lock_forever(zname, lname, held_ev):
    import shmkit
    z = zone_of(zname)
    shmkit.Lock(lname, zone=z).acquire()
    shmkit.Event(held_ev, zone=z).set()
    time.sleep(600)


def set_events(zname, names, delay):
    import shmkit
    z = zone_of(zname)
    evs = [shmkit.Event(n, zone=z) for n in names]
    time.sleep(delay)
    for e in evs:
        e.set()


def blocking_acquire(zname, sname, got_ev):
    """Take a unit of a semaphore with a plain blocking acquire in a thread other than the
    main one (which sleeps without signal slices): only a wake-up gets it before its
    timeout.  Say when it got it, give it back."""
    import threading

    import shmkit
    import shmkit.sync
    shmkit.sync.configure(spin_max=0)
    z = zone_of(zname)
    sem = shmkit.Semaphore(sname, 0, zone=z)

    def take():
        assert sem.acquire(timeout=60)
        shmkit.Event(got_ev, zone=z).set()

    t = threading.Thread(target=take)
    t.start()
    t.join()

"""Micro benchmark for segments (a guide for tuning, not the official suite).

What a segment costs to create, attach and detach, beside CPython's
multiprocessing.shared_memory.SharedMemory doing the same, and what a non-persist
lifecycle (its reaper process) adds.  Plus a cross-process read: a spawned process
attaches by name and copies 100 MB out, for shmkit and for SharedMemory (the "reused
segment + copy" anchor of BENCHMARKS.md).

    python benchmarks/micro_segments.py [--quick]

Median of 5 repetitions after a warm-up, min and max beside it.  Same run, same
machine: compare the ratios.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid


def _untracked(name):
    from multiprocessing import resource_tracker, shared_memory
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # CPython < 3.13 would unlink
    return shm


def _retrack(shm):
    # the untracked attaches above unregistered the creator's registration too (one
    # tracker per process tree): register it again so that unlink() finds it
    from multiprocessing import resource_tracker
    resource_tracker.register(shm._name, "shared_memory")


def reps(fn, n=5):
    fn()  # warm-up
    out = []
    for _ in range(n):
        out.append(fn())
    return statistics.median(out), min(out), max(out)


def per_op(fn, count):
    def run():
        t = time.perf_counter()
        for _ in range(count):
            fn()
        return (time.perf_counter() - t) / count * 1e6
    return run


def show(label, stats, unit="us"):
    med, lo, hi = stats
    print(f"  {label:<52} {med:10.1f} {unit}   (min {lo:.1f}, max {hi:.1f})")


def child_copy_out(kind, name, size, q):
    t = time.perf_counter()
    if kind == "shmkit":
        from shmkit import Segment
        s = Segment(name, "r")
        data = bytes(s.buf[:size])
        s.close()
    else:
        shm = _untracked(name)
        data = bytes(shm.buf[:size])
        shm.close()
    q.put((time.perf_counter() - t, len(data)))


def main(argv):
    from multiprocessing import shared_memory

    from shmkit import Segment
    quick = "--quick" in argv
    count = 200 if quick else 1000
    base = f"shmkit-micro-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    print(f"segments micro benchmark (pid {os.getpid()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]})")

    # -- attach + detach an existing 1 MiB segment ----------------------------------------
    seg = Segment(base + "-a", "x", 1 << 20)
    shm = shared_memory.SharedMemory(name=base + "-s", create=True, size=1 << 20)
    try:
        print("attach + detach an existing 1 MiB POSIX segment (per op)")
        show("shmkit Segment(name, 'w').close()",
             reps(per_op(lambda: Segment(base + "-a", "w").close(), count)))
        show("stdlib SharedMemory(name).close() [untracked]",
             reps(per_op(lambda: _untracked(base + "-s").close(), count)))
    finally:
        seg.unlink()
        seg.close()
        _retrack(shm)
        shm.close()
        shm.unlink()

    # -- create + unlink ---------------------------------------------------------------------
    print("create + close + unlink a 1 MiB POSIX segment (per op)")
    n = [0]

    def shmkit_create(lifecycle):
        def f():
            n[0] += 1
            s = Segment(f"{base}-c{n[0]}", "x", 1 << 20, lifecycle=lifecycle)
            if lifecycle == "persist":
                s.unlink()
            s.close()
        return f

    def stdlib_create():
        n[0] += 1
        s = shared_memory.SharedMemory(name=f"{base}-d{n[0]}", create=True, size=1 << 20)
        s.close()
        s.unlink()

    show("shmkit, persist (close + unlink)", reps(per_op(shmkit_create("persist"), count)))
    show("shmkit, unlink_on_last_close (reaper process)",
         reps(per_op(shmkit_create("unlink_on_last_close"), max(count // 20, 10))))
    show("stdlib SharedMemory(create=True) + unlink", reps(per_op(stdlib_create, count)))

    # -- a spawned process copies 100 MB out -------------------------------------------------
    size = (20 if quick else 100) << 20
    print(f"spawned process attaches by name and copies {size >> 20} MB out (per hand-off)")
    ctx = mp.get_context("spawn")
    payload = os.urandom(1 << 20) * (size >> 20)
    seg = Segment(base + "-big", "x", size)
    shm = shared_memory.SharedMemory(name=base + "-bigs", create=True, size=size)
    seg.buf[:size] = payload
    shm.buf[:size] = payload
    try:
        for kind, name in (("shmkit", base + "-big"), ("stdlib", base + "-bigs")):
            def once(kind=kind, name=name):
                q = ctx.Queue()
                p = ctx.Process(target=child_copy_out, args=(kind, name, size, q))
                p.start()
                dt, got = q.get(timeout=120)
                p.join()
                assert got == size
                return dt * 1e3
            show(f"{kind}: attach + copy out + detach, in the child", reps(once), "ms")
        t = time.perf_counter()
        bytearray(payload)
        print(f"  (an in-process copy of {size >> 20} MB: {(time.perf_counter() - t) * 1e3:.1f} ms)")
    finally:
        seg.unlink()
        seg.close()
        _retrack(shm)
        shm.close()
        shm.unlink()


if __name__ == "__main__":
    main(sys.argv[1:])

"""A parent and its forked children sharing memory that has no name at all.

    python examples/fork_children.py

The oldest way to share memory on Unix: map it MAP_SHARED|MAP_ANONYMOUS, then fork().
The children inherit the mapping; nothing appears in /dev/shm or in ipcs, and the memory
goes away with the last process that has it mapped - nothing to clean up, even after
kill -9.  A shmkit zone with ``backend="anonymous"`` is such a mapping, with shmkit's
objects inside:

- the parent creates the zone (results array, a counter, a queue, a lock) and forks four
  workers with ``os.fork()`` and one more with multiprocessing's "fork" start method;
  each computes its share of a sum, writes it into the shared array, counts itself and
  reports through the queue;
- a sixth child takes the lock and is SIGKILLed holding it: the parent's next acquire
  succeeds and reports ``owner_died``, so the parent knows to check what it protects.

Exits 0 only if the parent sees the exact total, every child's report, the dead holder's
lock recovered, and no name was created anywhere.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import traceback
from typing import Any, Callable

import shmkit

CHILDREN = 5                      # four os.fork() children, one multiprocessing "fork" child
N = 1_500_000                     # the sum of i*i for i < N is split between them


def work(results: Any, done: Any, reports: Any, index: int) -> None:
    lo, hi = index * N // CHILDREN, (index + 1) * N // CHILDREN
    results[index] = sum(i * i for i in range(lo, hi))
    done.inc()
    reports.put(f"{os.getpid()} {index} {lo} {hi}".encode())


def fork(target: Callable[..., None], *args: Any) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            target(*args)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def hold_and_wait(lock: Any, held: Any) -> None:
    lock.acquire()
    held.set()
    signal.pause()                                 # SIGKILLed here, holding the lock


def anonymous_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "/dev/zero (deleted)" in line)


def main() -> int:
    shm_before = set(os.listdir("/dev/shm"))
    zone = shmkit.Zone(None, 1 << 20, backend="anonymous")
    problems = []
    results = done = reports = lock = held = None
    try:
        results = zone.array("results", "q", CHILDREN)
        done = zone.counter("done")
        reports = zone.queue("reports", 1 << 16)
        lock = zone.lock("guard")
        held = zone.event("held")
        print(f"parent {os.getpid()}: anonymous zone of {zone.size >> 10} KiB, "
              f"{anonymous_mappings()} shared anonymous mapping(s) in /proc/self/maps")

        pids = [fork(work, results, done, reports, i) for i in range(CHILDREN - 1)]
        mp_child = mp.get_context("fork").Process(       # inherited too: nothing pickled
            target=work, args=(results, done, reports, CHILDREN - 1))
        mp_child.start()
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                problems.append(f"child {pid} failed")
        mp_child.join(60)
        if mp_child.exitcode != 0:
            problems.append("the multiprocessing child failed")

        total = sum(results)
        expected = (N - 1) * N * (2 * N - 1) // 6
        got = sorted(reports.get(timeout=5).split() for _ in range(CHILDREN))
        print(f"children {pids + [mp_child.pid]} wrote their parts: sum {total} "
              f"({'exact' if total == expected else 'WRONG, expected %d' % expected}), "
              f"counter {done.get()}, {len(got)} reports")
        if total != expected or done.get() != CHILDREN:
            problems.append("the children's results do not add up")
        if [int(r[0]) for r in sorted(got, key=lambda r: int(r[1]))] != pids + [mp_child.pid]:
            problems.append(f"the reports do not match the children: {got}")

        holder = fork(hold_and_wait, lock, held)
        if not held.wait(30):
            problems.append("the lock holder did not take the lock")
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        got_lock = lock.acquire(timeout=10)
        print(f"child {holder} SIGKILLed holding the lock: parent's acquire -> {got_lock}, "
              f"owner_died {lock.owner_died}")
        if not (got_lock and lock.owner_died):
            problems.append("the dead child's lock was not recovered")
        if got_lock:
            lock.release()
    finally:
        results = done = reports = lock = held = None   # our handles on the zone's objects
        zone.close()
    new_names = set(os.listdir("/dev/shm")) - shm_before
    ours = [n for n in new_names if str(os.getpid()) in n]
    print(f"names created in /dev/shm by this program: {ours or 'none'}; after close, shared "
          f"anonymous mappings left here: {anonymous_mappings()} (the children are gone: "
          "the memory is freed)")
    if ours:
        problems.append(f"names appeared: {ours}")
    if anonymous_mappings():
        problems.append("the anonymous mapping outlived every handle")
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print(f"OK: {CHILDREN} forked children shared an anonymous zone with their parent: exact "
          "sum, every report, a SIGKILLed child's lock recovered, no name anywhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small helpers shared by the scenario modules (they run in the spawned workers too)."""

from __future__ import annotations

import sys


def attach_shared_memory(name: str):
    """Attach to an existing stdlib SharedMemory.

    Before 3.13 attaching registers the name with the resource tracker, which the spawned
    workers share with the parent: the registration is a duplicate of the creator's, and
    the creator's unlink() removes it, so nothing is unlinked behind anyone's back."""
    from multiprocessing import shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    return shared_memory.SharedMemory(name)


def create_shared_memory(size: int, name: str | None = None):
    """A new stdlib SharedMemory; its creator unlinks it explicitly."""
    from multiprocessing import shared_memory

    return shared_memory.SharedMemory(name, create=True, size=size)


def size_label(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def size_tag(n: int) -> str:
    return size_label(n).replace(" ", "")


def round_trip_percentiles(ts: list) -> dict:
    """p50 and p99 in microseconds of the round trips between consecutive timestamps
    (perf_counter_ns) of ``ts``: what the ping-pong scenarios report."""
    n = len(ts) - 1
    lat = sorted(ts[i] - ts[i - 1] for i in range(1, n + 1))
    return {"p50": lat[n // 2] / 1000.0, "p99": lat[min(n - 1, (n * 99) // 100)] / 1000.0}

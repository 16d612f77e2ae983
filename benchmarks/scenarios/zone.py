"""Allocator: alloc+free pairs per second for common sizes.

shmkit's zone allocator (nginx-style slab, offsets in shared memory) beside what a user
does without one: a stdlib SharedMemory segment per allocation (create, close, unlink),
and, as a yardstick, a private bytearray.  One process; each size is timed separately.
"""

from __future__ import annotations

import time

from .. import harness as h
from ..harness import ANCHOR, REFERENCE, SHMKIT, Case, Metric, Role, Scenario
from ._common import size_label

SIZES = (64, 1024, 64 << 10)


def _metric(size):
    return size_label(size)


def zone_worker(ctl, zone):
    alloc, free = zone.alloc, zone.free
    for n in ctl.reps():
        out = {}
        for size in SIZES:
            t0 = time.perf_counter()
            for _ in range(n):
                free(alloc(size))
            out[_metric(size)] = time.perf_counter() - t0
        ctl.report(**out)


def shared_memory_worker(ctl):
    from multiprocessing import shared_memory

    SharedMemory = shared_memory.SharedMemory
    for n in ctl.reps():
        out = {}
        for size in SIZES:
            t0 = time.perf_counter()
            for _ in range(n):
                s = SharedMemory(create=True, size=size)
                s.close()
                s.unlink()
            out[_metric(size)] = time.perf_counter() - t0
        ctl.report(**out)


def bytearray_worker(ctl):
    for n in ctl.reps():
        out = {}
        for size in SIZES:
            t0 = time.perf_counter()
            for _ in range(n):
                bytearray(size)
            out[_metric(size)] = time.perf_counter() - t0
        ctl.report(**out)


def compute(n, reports):
    return {name: n / max(secs, 1e-12) for name, secs in reports[0].items()}


def cases(opts):
    def zone(env):
        h.need_shmkit("Zone", "alloc", "free")
        z = env.zone(32 << 20)
        return [Role(zone_worker, (z,))]

    def shm(env):
        return [Role(shared_memory_worker)]

    def ba(env):
        return [Role(bytearray_worker)]

    return [
        Case("SharedMemory segment per allocation", ANCHOR, shm, compute, 20, 1_000_000,
             note="create + close + unlink"),
        Case("bytearray (private memory)", REFERENCE, ba, compute, 1000, 50_000_000, note="not shared"),
        Case("shmkit Zone.alloc/free", SHMKIT, zone, compute, 1000, 50_000_000),
    ]


def scenarios():
    return [Scenario(
        name="zone_alloc",
        group="zone",
        title="allocator: alloc+free pairs, " + ", ".join(size_label(s) for s in SIZES),
        description="One process allocates and frees blocks of one size in a loop; pairs per second, per size.",
        metrics=[Metric(size_label(s), "pairs/s") for s in SIZES],
        cases=cases,
    )]

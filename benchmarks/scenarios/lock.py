"""Lock acquire+release pairs per second, in 1 process and in 2 processes contending.

Each process runs n acquire/release pairs back to back; the figure is the total number
of pairs divided by the time from the first start to the last finish.  With 2 processes
both hammer the same lock, so every pair may hand the lock across processes.
"""

from __future__ import annotations

import fcntl
import os
import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario


def lock_worker(ctl, lock):
    acquire, release = lock.acquire, lock.release
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        ctl.report(t0=t0, t1=time.perf_counter())


def sem_worker(ctl, name):
    import posix_ipc

    sem = posix_ipc.Semaphore(name)
    acquire, release = sem.acquire, sem.release
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        ctl.report(t0=t0, t1=time.perf_counter())
    sem.close()


def flock_worker(ctl, path):
    # flock locks belong to an open file description: each process opens its own
    fd = os.open(path, os.O_RDWR)
    flock, EX, UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            flock(fd, EX)
            flock(fd, UN)
        ctl.report(t0=t0, t1=time.perf_counter())
    os.close(fd)


def cases(procs: int):
    def compute(n, reports):
        return {"rate": h.rate(n * procs, reports)}

    def mp_lock(env):
        lock = env.ctx.Lock()
        return [Role(lock_worker, (lock,)) for _ in range(procs)]

    def posix_sem(env):
        posix_ipc = h.need_module("posix_ipc")
        name = "/" + env.unique("sem")
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=1).close()
        env.defer(lambda: posix_ipc.unlink_semaphore(name))
        return [Role(sem_worker, (name,)) for _ in range(procs)]

    def flock(env):
        path = os.path.join(env.tmpdir, env.unique("flock"))
        with open(path, "wb"):
            pass
        env.defer(lambda: os.unlink(path))
        return [Role(flock_worker, (path,)) for _ in range(procs)]

    def shmkit(env):
        Lock = h.need_shmkit("Lock", "acquire", "release")
        zone = env.zone(4 << 20)
        lock = h.shmkit_call("shmkit.Lock(name, zone=...)", Lock, env.unique("lock"), zone=zone)
        return [Role(lock_worker, (lock,)) for _ in range(procs)]

    n0, n_max = 2000, 100_000_000
    return [
        Case("multiprocessing.Lock", ANCHOR, mp_lock, compute, n0, n_max),
        Case("posix_ipc.Semaphore", ANCHOR, posix_sem, compute, n0, n_max, note="initial value 1"),
        Case("fcntl.flock", ANCHOR, flock, compute, n0, n_max),
        Case("shmkit.Lock", SHMKIT, shmkit, compute, n0, n_max, note="robust: survives owner death"),
    ]


def scenarios():
    out = []
    for procs in (1, 2):
        out.append(Scenario(
            name=f"lock_{procs}p",
            group="lock",
            title=f"lock acquire+release, {procs} process{'es' if procs > 1 else ''}"
                  + (" contending" if procs > 1 else ", uncontended"),
            description=("One process runs acquire/release pairs on one lock; pairs per second."
                         if procs == 1 else
                         f"{procs} processes run acquire/release pairs on the same lock; pairs per "
                         "second, all processes together."),
            metrics=[Metric("rate", "pairs/s")],
            cases=lambda opts, procs=procs: cases(procs),
            bar=h.bar_ratio(1.0, ">= 1.0x multiprocessing.Lock, while surviving owner death",
                            label="multiprocessing.Lock"),
        ))
    return out

"""Awaitable twins of the sync objects (issue 16), against real processes: Lock, RLock,
RWLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier.  Each on asyncio's loop
and on uvloop; results and timeouts as the blocking methods have them; owner death seen
through the hub's liveness retries; cancellation never leaves anything held or
registered."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import time

import pytest

import shmkit
from aio_support import (LOOPS, blocking_acquire, hold_lock, hold_lock_forever, run,
                         set_events, until)

SPAWN = mp.get_context("spawn")


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


def start(procs, target, *args):
    p = SPAWN.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


def hub_waits():
    return shmkit.aio_statistics()["waits"]


# -- Lock ------------------------------------------------------------------------------------

def test_lock_waits_for_another_process(zone, procs, loop_kind):
    lk = zone.lock("l")
    held, rel = zone.event("held"), zone.event("rel")

    async def main():
        assert await lk.aio.acquire() is True          # free: no wait at all
        assert lk._is_owned()
        await lk.aio.release()                         # awaitable, already done
        assert not lk.locked()
        child = start(procs, hold_lock, zone.name, "l", "lock", "held", "rel", 30)
        await until(held.is_set, what="the child holds the lock")
        assert await lk.aio.acquire(blocking=False) is False
        assert await lk.aio.acquire(timeout=0) is False
        t0 = time.monotonic()
        assert await lk.aio.acquire(timeout=0.2) is False   # timeout: False, as blocking
        assert 0.19 <= time.monotonic() - t0 < 5
        assert hub_waits() == 0
        waiter = asyncio.ensure_future(lk.aio.acquire(timeout=30))
        await until(lambda: hub_waits() == 1, what="the acquire waits in the hub")
        assert lk.statistics().waiters >= 1            # registered as a waiter
        rel.set()
        assert await waiter is True
        assert lk._is_owned() and lk.owner_died is False
        lk.release()
        child.join(10)
        async with lk.aio as a:
            assert a is not None and lk.locked()
        assert not lk.locked()
        assert lk.statistics().waiters == 0

    run(main(), loop_kind)


def test_lock_owner_death_through_the_hub(zone, procs, loop_kind):
    lk = zone.lock("l")
    held = zone.event("held")

    async def main():
        child = start(procs, hold_lock_forever, zone.name, "l", "held")
        await until(held.is_set, what="the child holds the lock")
        waiter = asyncio.ensure_future(lk.aio.acquire(timeout=30))
        await until(lambda: hub_waits() == 1, what="the acquire waits in the hub")
        os.kill(child.pid, signal.SIGKILL)   # dies holding it: no wake-up ever comes
        child.join(10)
        t0 = time.monotonic()
        assert await waiter is True          # the liveness retry finds the holder dead
        assert time.monotonic() - t0 < 5
        assert lk.owner_died is True and lk.aio.owner_died is True
        lk.release()

    run(main(), loop_kind)


def test_lock_excludes_tasks_of_one_loop(zone):
    lk = zone.lock("l")
    inside = []

    async def worker(i):
        for _ in range(20):
            async with lk.aio:
                inside.append(i)
                assert len(inside) == 1
                await asyncio.sleep(0)
                inside.pop()

    async def main():
        await asyncio.gather(*(worker(i) for i in range(8)))

    run(main())
    assert not lk.locked() and lk.statistics().waiters == 0


# -- RLock: belongs to a task -----------------------------------------------------------------

def test_rlock_belongs_to_a_task(zone, procs, loop_kind):
    rl = zone.rlock("r")
    held = zone.event("held")
    order = []

    async def other():
        assert await rl.aio.acquire(blocking=False) is False
        assert await rl.aio.acquire(timeout=0.05) is False
        async with rl.aio:
            order.append("other")

    async def main():
        assert await rl.aio.acquire()
        assert await rl.aio.acquire()                # again: the same task
        assert rl._owned_count == 2
        t = asyncio.ensure_future(other())
        await asyncio.sleep(0.1)
        assert order == []                           # it waits for this task
        with pytest.raises(shmkit.NotOwnerError):
            await asyncio.ensure_future(_release(rl))  # another task may not release it
        rl.aio.release()
        await asyncio.sleep(0.05)
        assert order == []                           # one level still held
        rl.aio.release()
        await t
        assert order == ["other"]
        assert not rl.locked()
        # across processes: a child holds it
        child = start(procs, hold_lock, zone.name, "r", "rlock", "held", None, 0.3)
        await until(held.is_set, what="the child holds the RLock")
        t0 = time.monotonic()
        async with rl.aio:
            assert time.monotonic() - t0 > 0.1
        child.join(10)

    run(main(), loop_kind)


async def _release(rl):
    rl.aio.release()


# -- RWLock -----------------------------------------------------------------------------------

def test_rwlock(zone, procs, loop_kind):
    rw = zone.rwlock("rw")
    held, rel = zone.event("held"), zone.event("rel")

    async def main():
        async with rw.aio.read_lock():
            async with rw.aio.read_lock():           # readers share
                assert rw.statistics().readers == 2
        child = start(procs, hold_lock, zone.name, "rw", "read", "held", "rel", 30)
        await until(held.is_set, what="the child reads")
        assert await rw.aio.acquire_read(timeout=1)  # another reader: at once
        rw.aio.release_read()
        assert await rw.aio.acquire_write(timeout=0.1) is False   # timed out draining
        assert rw.statistics().writer_pid == 0       # ... and let the writer word go
        w = asyncio.ensure_future(rw.aio.acquire_write(timeout=30))
        await until(lambda: hub_waits() == 1, what="the writer waits")
        rel.set()
        assert await w is True
        assert rw._is_writer()
        await rw.aio.release_write()
        child.join(10)
        async with rw.aio.write_lock():
            assert rw.statistics().writer_pid == os.getpid()

    run(main(), loop_kind)


def test_rwlock_writer_cancelled_while_readers_drain(zone, procs):
    rw = zone.rwlock("rw")
    held, rel = zone.event("held"), zone.event("rel")

    async def main():
        child = start(procs, hold_lock, zone.name, "rw", "read", "held", "rel", 30)
        await until(held.is_set, what="the child reads")
        w = asyncio.ensure_future(rw.aio.acquire_write())
        await until(lambda: rw.statistics().writer_pid == os.getpid(),
                    what="the writer holds the writer word, waiting for the reader")
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w
        assert rw.statistics().writer_pid == 0       # partial progress undone
        assert await rw.aio.acquire_read(timeout=1)  # readers are let in again
        rw.aio.release_read()
        rel.set()
        child.join(10)

    run(main())


# -- Semaphores ---------------------------------------------------------------------------------

def test_semaphore(zone, procs, loop_kind):
    sem = zone.semaphore("s", 2)
    held, rel = zone.event("held"), zone.event("rel")

    async def main():
        child = start(procs, hold_lock, zone.name, "s", "sem", "held", "rel", 30)
        await until(held.is_set, what="the child holds both units")
        assert await sem.aio.acquire(blocking=False) is False
        assert await sem.aio.acquire(timeout=0.1) is False
        tasks = [asyncio.ensure_future(sem.aio.acquire(timeout=30)) for _ in range(3)]
        await until(lambda: hub_waits() == 3, what="three acquires wait")
        rel.set()                                    # two units come back
        done, pending = await asyncio.wait(tasks, timeout=10,
                                           return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.1)
        assert sum(t.done() for t in tasks) == 2
        sem.aio.release()
        assert all(await asyncio.gather(*tasks))
        sem.release(2)
        assert sem.get_value() == 2
        async with sem.aio:
            assert sem.get_value() == 1
        child.join(10)

    run(main(), loop_kind)


def test_bounded_semaphore(zone):
    sem = zone.bounded_semaphore("b", 1)

    async def main():
        async with sem.aio:
            pass
        with pytest.raises(ValueError):
            sem.aio.release()

    run(main())


# -- Event -----------------------------------------------------------------------------------

def test_event(zone, procs, loop_kind):
    ev = zone.event("e")

    async def main():
        assert await ev.aio.wait(0) is False
        t0 = time.monotonic()
        assert await ev.aio.wait(0.15) is False
        assert time.monotonic() - t0 >= 0.14
        start(procs, set_events, zone.name, ["e"], 0.2)
        assert await ev.aio.wait(30) is True
        assert await ev.aio.wait() is True           # set: at once

    run(main(), loop_kind)
    assert ev.statistics().waiters == 0


def test_event_set_and_cleared_while_waiting(zone):
    ev = zone.event("e")

    async def main():
        w = asyncio.ensure_future(ev.aio.wait(30))
        await until(lambda: hub_waits() == 1, what="the wait")
        ev.set()
        ev.clear()
        assert await w is True

    run(main())


# -- Condition ---------------------------------------------------------------------------------

def notify_later(zname, cname, counter, delay, times):
    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    cond = shmkit.Condition(cname, zone=z)
    c = shmkit.Counter(counter, zone=z)
    for _ in range(times):
        time.sleep(delay)
        with cond:
            c.inc()
            cond.notify_all()


def test_condition_across_processes(zone, procs, loop_kind):
    cond = zone.condition("c")
    counter = zone.counter("n")

    async def main():
        async with cond.aio:
            assert await cond.aio.wait(0.05) is False   # timeout: False, lock held again
            assert cond.aio._lock._owned()
        start(procs, notify_later, zone.name, "c", "n", 0.05, 3)
        async with cond.aio:
            assert await cond.aio.wait_for(lambda: counter.get() >= 3, timeout=30)
            assert cond.aio._lock._owned()
        with pytest.raises(RuntimeError):
            await cond.aio.wait(0.01)                   # lock not held
        with pytest.raises(RuntimeError):
            cond.aio.notify()

    run(main(), loop_kind)
    assert cond.statistics().waiters == 0


def test_condition_between_tasks_and_cancellation(zone):
    cond = zone.condition("c")
    items = []

    async def consumer():
        async with cond.aio:
            await cond.aio.wait_for(lambda: items, timeout=30)
            return items.pop()

    async def main():
        c = asyncio.ensure_future(consumer())
        await until(lambda: cond.statistics().waiters == 1, what="the consumer waits")
        async with cond.aio:
            items.append(1)
            cond.aio.notify()
        assert await c == 1
        # cancelled while waiting: the lock is taken again before the cancellation
        # propagates, then released by the async with
        c = asyncio.ensure_future(consumer())
        await until(lambda: cond.statistics().waiters == 1, what="the consumer waits")
        c.cancel()
        with pytest.raises(asyncio.CancelledError):
            await c
        assert not cond.lock.locked()
        assert cond.statistics().waiters == 0

    run(main())


# -- Barrier ---------------------------------------------------------------------------------

def barrier_party(zname, bname, parties, timeout):
    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    b = shmkit.Barrier(bname, parties, zone=z)
    try:
        b.wait(timeout)
    except shmkit.BrokenBarrierError:
        pass


def test_barrier(zone, procs, loop_kind):
    ran = []
    b = zone.barrier("b", 3, action=lambda: ran.append(1))

    async def main():
        ps = [start(procs, barrier_party, zone.name, "b", 3, 30) for _ in range(2)]
        index = await b.aio.wait(30)
        assert 0 <= index < 3
        for p in ps:
            p.join(10)
            assert p.exitcode == 0
        assert b.n_waiting == 0 and not b.broken
        # a timeout breaks it, for the others too
        with pytest.raises(shmkit.BrokenBarrierError):
            await b.aio.wait(0.1)
        assert b.broken
        b.reset()
        # cancelled after arriving: broken, as an interrupted threading wait
        w = asyncio.ensure_future(b.aio.wait(30))
        await until(lambda: b.n_waiting == 1, what="the party arrived")
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w
        assert b.broken

    run(main(), loop_kind)
    assert ran in ([], [1])   # the action ran in whichever party came last


# -- cancellation: nothing held, nothing registered, wake-ups passed on ------------------------

def toggle_lock(zname, lname, running_ev, stop_ev):
    import random

    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    lk, stop = shmkit.Lock(lname, zone=z), shmkit.Event(stop_ev, zone=z)
    running = shmkit.Event(running_ev, zone=z)
    rng = random.Random(os.getpid())
    while not stop.is_set():
        with lk:
            running.set()
            time.sleep(rng.random() * 0.002)
        time.sleep(rng.random() * 0.001)


def test_cancelled_acquires_leave_nothing_held(zone, procs):
    """Tasks take a lock that a child takes and releases again and again; they are
    cancelled at random moments: while waiting in the hub, in the window between the hub's
    readiness and their attempt (the loop kept busy), or while holding it inside ``async
    with``.  Whatever happens, no cancelled task holds the lock afterwards and no
    registration is left behind."""
    import random

    lk = zone.lock("l")
    stop, running = zone.event("stop"), zone.event("running")
    rng = random.Random(1234)
    took = []

    async def user(i):
        async with lk.aio:
            took.append(i)
            await asyncio.sleep(rng.random() * 0.001)

    async def main():
        start(procs, toggle_lock, zone.name, "l", "running", "stop")
        await until(running.is_set, timeout=30, what="the child toggles the lock")
        for rnd in range(150):
            tasks = [asyncio.ensure_future(user(i)) for i in range(5)]
            await asyncio.sleep(rng.random() * 0.004)
            if rnd % 3 == 0:
                time.sleep(0.003)       # the loop is busy: readiness piles up undrained
            for t in tasks:
                if rng.random() < 0.6:
                    t.cancel()
            await asyncio.wait(tasks, timeout=20)
            assert all(t.done() for t in tasks)
            assert not lk._is_owned(), f"round {rnd}: a cancelled acquire left the lock held"
            assert hub_waits() == 0
        stop.set()
        procs[0].join(10)
        assert not lk.locked()
        assert lk.statistics().waiters == 0
        assert took  # some got it

    run(main())


def test_cancelled_wait_passes_its_wakeup_on(zone, procs):
    """The hub took the one wake-up a release(1) sends for a coroutine that is cancelled
    before it attempts: it is passed on, so a blocking waiter in another process (which
    has no liveness check or slice to save it) gets the unit at once."""
    sem = zone.semaphore("s", 0)
    got = zone.event("got")

    async def main():
        w = asyncio.ensure_future(sem.aio.acquire(timeout=30))
        await until(lambda: hub_waits() == 1, what="the coroutine waits in the hub")
        await asyncio.sleep(0.05)       # the hub is asleep on the word, first in line
        other = start(procs, blocking_acquire, zone.name, "s", "got")
        await until(lambda: sem.statistics().waiters >= 2, timeout=30,
                    what="the other process waits too")
        await asyncio.sleep(0.05)       # past its first 10 ms of short sleeps (core/wait.c,
                                        # CANCEL_PLAIN_NS), whose end would look again
        sem.release()                   # wakes one waiter: the hub, queued first
        time.sleep(0.2)                 # the loop is busy: the hub's readiness waits
        assert not got.is_set()         # the other waiter was not woken
        w.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await w
        assert await asyncio.get_running_loop().run_in_executor(None, got.wait, 10)
        assert time.monotonic() - t0 < 5, "the wake-up was not passed on"
        assert shmkit.aio_statistics()["waits"] == 0
        other.join(10)
        assert sem.get_value() == 0

    run(main())

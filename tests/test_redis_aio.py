"""Awaitable twins of the RedisZone objects (issue 16's ``aio``): real redis-server,
real processes; cancellation at random points loses no message and leaks no lock; many
waiters cost no threads."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import threading
import time

import pytest

from shmkit import QueueEmpty, ShmkitTimeoutError


def _produce(zone, name, n, delay):
    q = zone.queue(name)
    for i in range(n):
        q.put(str(i).encode())
        time.sleep(delay)


def _hold_then_release(zone, name, seconds, held):
    lock = zone.lock(name)
    lock.acquire()
    held.set()
    time.sleep(seconds)
    lock.release()


def _set_all(zone, names, delay):
    time.sleep(delay)
    for n in names:
        zone.event(n).set()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_queue_twins(redis_zone):
    z = redis_zone()
    q = z.queue("q", delivery="at-least-once")

    async def main():
        await q.aio.put(b"1")
        assert await q.aio.put_many([b"2", b"3"]) == 2
        assert await q.aio.get() == b"1"
        assert await q.aio.get_many(10) == [b"2", b"3"]
        t0 = time.monotonic()
        with pytest.raises(QueueEmpty):
            await q.aio.get(timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 3
        with pytest.raises(ShmkitTimeoutError):
            await q.aio.join(timeout=0.3)
        q.task_done(3)
        await q.aio.join(timeout=5)
    run(main())


@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once"])
def test_cancelled_gets_lose_no_message(redis_zone, delivery):
    z = redis_zone()
    q = z.queue("q", delivery=delivery)
    n = 300
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_produce, args=(z, "q", n, 0.002))
    p.start()
    rnd = random.Random(7)

    async def main():
        got = []
        cancelled = 0
        deadline = time.monotonic() + 90
        while len(set(got)) < n and time.monotonic() < deadline:
            task = asyncio.ensure_future(q.aio.get(timeout=2))
            await asyncio.sleep(rnd.random() * 0.004)
            if not task.done():
                task.cancel()
            try:
                got.append(await task)
            except asyncio.CancelledError:
                cancelled += 1
            except QueueEmpty:
                pass
        return got, cancelled

    try:
        got, cancelled = run(main())
    finally:
        p.join(60)
    assert cancelled > 20, "the test cancelled too few gets to mean anything"
    assert sorted(got, key=int) == [str(i).encode() for i in range(n)]


def test_cancelled_acquire_leaves_no_lock_held(redis_zone):
    z = redis_zone()
    ctx = mp.get_context("spawn")
    held = ctx.Event()
    p = ctx.Process(target=_hold_then_release, args=(z, "l", 1.0, held))
    p.start()
    assert held.wait(60)
    lock = z.lock("l")
    rnd = random.Random(3)

    async def main():
        wins = 0
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            task = asyncio.ensure_future(lock.aio.acquire(timeout=5))
            await asyncio.sleep(rnd.random() * 0.01)
            task.cancel()
            try:
                if await task:
                    wins += 1
                    await lock.aio.release()
            except asyncio.CancelledError:
                pass
        await asyncio.sleep(0.5)            # releases of orphaned grants run
        return wins

    try:
        run(main())
    finally:
        p.join(30)
    assert lock.acquire(timeout=1), "a cancelled acquire left the lock held"
    lock.release()
    assert lock.statistics().owner_deaths == 0


def test_many_waiters_few_threads(redis_zone):
    z = redis_zone()
    names = [f"e{i}" for i in range(50)]
    events = [z.event(n) for n in names]
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_set_all, args=(z, names, 1.5))
    p.start()

    before = threading.active_count()

    async def main():
        waits = [asyncio.ensure_future(e.aio.wait(60)) for e in events for _ in range(10)]
        await asyncio.sleep(1.0)
        threads = threading.active_count()
        cpu0 = time.process_time()
        results = await asyncio.gather(*waits)
        return results, threads, time.process_time() - cpu0

    try:
        results, threads, _ = run(main())
    finally:
        p.join(60)
    assert len(results) == 500 and all(results)
    assert threads - before <= 1, "waiting coroutines took threads"


def test_lock_semaphore_board_config_twins(redis_zone):
    z = redis_zone()
    lock, sem, board, cfg = z.lock("l"), z.semaphore("s", 1), z.board("b", 1000), z.config("c")

    async def main():
        async with lock.aio:
            assert lock.locked() and lock.fencing_token >= 1
        assert not lock.locked()
        async with sem.aio:
            assert sem.get_value() == 0
        assert sem.get_value() == 1

        async def later():
            await asyncio.sleep(0.2)
            board.publish({"v": 1})
            cfg.publish({"x": 2})
        asyncio.ensure_future(later())
        assert await board.aio.wait_newer(0, timeout=10) == ({"v": 1}, 1)
        snap, version = await cfg.aio.wait_for_change(0, timeout=10)
        assert snap["x"] == 2 and version == 1
        with pytest.raises(ShmkitTimeoutError):
            await board.aio.wait_newer(1, timeout=0.2)
    run(main())

"""Awaitable twins of Queue (issue 16): get, put, get_many, put_many against producer and
consumer processes, on asyncio and uvloop; timeouts raise QueueEmpty / QueueFull as the
blocking calls do; cancelled gets never lose a message; detaching the handle, closing
the queue or its zone wakes the waiting coroutines."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time

import pytest

import shmkit
from aio_support import LOOPS, run, until

SPAWN = mp.get_context("spawn")


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


def start(procs, target, *args):
    p = SPAWN.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


def produce(zname, qname, n, pause, mode="bytes"):
    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    q = shmkit.Queue(qname, zone=z, mode=mode)
    rng = random.Random(7)
    for i in range(n):
        q.put(i if mode == "objects" else str(i).encode(), timeout=60)
        if pause:
            time.sleep(rng.random() * pause)


def consume_slowly(zname, qname, n, pause, out_ev):
    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    q = shmkit.Queue(qname, zone=z)
    for _ in range(n):
        q.get(timeout=60)
        time.sleep(pause)
    shmkit.Event(out_ev, zone=z).set()


def test_get_from_another_process(zone, procs, loop_kind):
    q = zone.queue("q", 1 << 16)
    oq = zone.queue("oq", 1 << 16, mode="objects")

    async def main():
        with pytest.raises(shmkit.QueueEmpty):
            await q.aio.get(block=False)
        t0 = time.monotonic()
        with pytest.raises(shmkit.QueueEmpty):
            await q.aio.get(timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        with pytest.raises(ValueError):
            await q.aio.get(timeout=-1)
        start(procs, produce, zone.name, "q", 200, 0.002)
        got = [await q.aio.get(timeout=30) for _ in range(100)]
        while len(got) < 200:
            got += await q.aio.get_many(50, timeout=30)
        assert got == [str(i).encode() for i in range(200)]
        start(procs, produce, zone.name, "oq", 20, 0.01, "objects")
        assert [await oq.aio.get(timeout=30) for _ in range(20)] == list(range(20))
        await q.aio.put(b"view")
        v = await q.aio.get(view=True)
        assert bytes(v) == b"view"
        del v

    run(main(), loop_kind)
    assert q.statistics().depth == 0


def test_put_waits_for_room(zone, procs, loop_kind):
    q = zone.queue("q", 1 << 14)
    done = zone.event("done")

    async def main():
        n = 0
        while True:                              # fill the ring
            try:
                q.put(b"x" * 1000, False)
                n += 1
            except shmkit.QueueFull:
                break
        with pytest.raises(shmkit.QueueFull):
            await q.aio.put(b"y" * 1000, block=False)
        with pytest.raises(shmkit.QueueFull):
            await q.aio.put(b"y" * 1000, timeout=0.1)
        start(procs, consume_slowly, zone.name, "q", n + 3, 0.02, "done")
        await q.aio.put(b"y" * 1000, timeout=30)        # room comes as the child takes
        assert await q.aio.put_many([b"z" * 1000] * 2, timeout=30) == 2
        assert await until(done.is_set, timeout=60, what="the child took everything") is None

    run(main(), loop_kind)


def test_objects_put_waits_for_its_framed_record(zone):
    """A put of an object with out-of-band buffers (a framed record) waits for room for
    that very record: not less (it would spin), not more (it would wait for nothing)."""
    np = pytest.importorskip("numpy")
    q = zone.queue("oq", 1 << 16, mode="objects")
    big = np.arange(3000, dtype=np.float64)          # 24 KB, out of band

    async def main():
        await q.aio.put(big)
        await q.aio.put(big)
        with pytest.raises(shmkit.QueueFull):
            await q.aio.put(big, timeout=0.1)
        t = asyncio.ensure_future(q.aio.put(big, timeout=30))
        await asyncio.sleep(0.1)
        assert not t.done()
        assert (q.get() == big).all()                  # room for exactly one more
        await t
        assert q.qsize() == 2

    run(main())


def test_cancelled_gets_lose_no_message(zone, procs):
    """A producer process puts 3,000 numbered messages; consumer coroutines get them and
    are cancelled at random moments (also while the hub's readiness is pending and the
    loop is busy). Every message arrives exactly once."""
    q = zone.queue("q", 1 << 16)
    rng = random.Random(42)
    got = []

    async def consumer():
        while True:
            got.append(await q.aio.get(timeout=5))

    async def main():
        start(procs, produce, zone.name, "q", 3000, 0.0005)
        deadline = time.monotonic() + 60
        while len(got) < 3000 and time.monotonic() < deadline:
            tasks = [asyncio.ensure_future(consumer()) for _ in range(3)]
            await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 0.3:
                time.sleep(0.002)                # readiness arrives while the loop is busy
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert shmkit.aio_statistics()["waits"] == 0
        procs[0].join(30)
        while True:                              # what is left, if anything
            try:
                got.append(q.get(False))
            except shmkit.QueueEmpty:
                break

    run(main(), timeout=120)
    assert sorted(int(x) for x in got) == list(range(3000))


def test_detach_close_and_zone_close_wake_waiters(name, procs):
    zone = shmkit.Zone(name, 4 << 20)
    try:
        q1, q2, q3 = zone.queue("a"), zone.queue("b"), zone.queue("c")

        async def main():
            w1 = asyncio.ensure_future(q1.aio.get(timeout=30))
            w2 = asyncio.ensure_future(q2.aio.get(timeout=30))
            await until(lambda: shmkit.aio_statistics()["waits"] == 2, what="both wait")
            q1.detach()
            with pytest.raises(shmkit.ClosedError):
                await w1
            q2.close()                           # the queue itself, for every process
            with pytest.raises(shmkit.ClosedError):
                await w2
            w3 = asyncio.ensure_future(q3.aio.get(timeout=30))
            await until(lambda: shmkit.aio_statistics()["waits"] == 1, what="it waits")
            zone.close()
            with pytest.raises(shmkit.ClosedError):
                await w3
            assert shmkit.aio_statistics()["waits"] == 0

        run(main())
    finally:
        zone.close()

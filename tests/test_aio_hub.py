"""The process's readiness hub behind every awaitable twin (issue 16): many waiting
coroutines cost a few threads and no CPU; one liveness retry per lock, not one per
waiter; closing a handle or a zone wakes its waiters with ClosedError (and the mapping
goes once they are done); the fallback without futex_waitv, forced; fork."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import textwrap
import time

import pytest

import shmkit
from aio_support import (LOOPS, cpu_seconds, hold_lock, hold_lock_forever, run, set_events,
                         threads, until)
from conftest import run_python

SPAWN = mp.get_context("spawn")


def stats():
    return shmkit.aio_statistics()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_many_waiters_few_threads_no_cpu(zone, procs, loop_kind):
    """10,000 coroutines awaiting 1,000 events, all set by another process: every one
    wakes; while they wait the process uses ~no CPU and at most 8 hub threads
    (futex_waitv: 127 words each)."""
    names = [f"e{i}" for i in range(1000)]
    events = [zone.event(n) for n in names]
    go = zone.event("go")
    before = threads()

    async def main():
        woke = 0

        async def waiter(ev):
            nonlocal woke
            assert await ev.aio.wait(60)
            woke += 1

        tasks = [asyncio.ensure_future(waiter(events[i % 1000])) for i in range(10_000)]
        await until(lambda: stats()["waits"] == 10_000, timeout=60, what="all waiting")
        st = stats()
        assert st["slots"] == 1000
        if st["mode"] == "futex_waitv":
            assert threads() - before <= 8, (before, threads())
        sleeps = st["sleeps"]
        cpu = cpu_seconds()
        await asyncio.sleep(1.0)                     # everyone waits: nothing should run
        used = cpu_seconds() - cpu
        assert used < 0.1, f"{used:.3f} s of CPU in 1 s of waiting"
        assert stats()["sleeps"] - sleeps <= 8       # the hub threads stay asleep
        p = SPAWN.Process(target=set_events, args=(zone.name, names, 0))
        p.start()
        procs.append(p)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert woke == 10_000
        p.join(10)

    run(main(), loop_kind, timeout=120)
    assert stats()["waits"] == 0
    for ev in events[:10]:
        assert ev.statistics().waiters == 0


def test_one_liveness_retry_per_lock(zone, procs):
    """100 coroutines wait for a lock held by a live process: the holder's liveness is
    checked about once per interval for all of them (a wait per slot retries, the others
    are pushed back), not 100 times."""
    lk = zone.lock("l")
    held = zone.event("held")

    async def main():
        child = SPAWN.Process(target=hold_lock_forever, args=(zone.name, "l", "held"))
        child.start()
        procs.append(child)
        await until(held.is_set, timeout=30, what="the child holds the lock")
        tasks = [asyncio.ensure_future(lk.aio.acquire(timeout=60)) for _ in range(100)]
        await until(lambda: stats()["waits"] == 100, what="all waiting")
        await asyncio.sleep(0.2)                     # past the 1, 2, 4 ... ms ramp
        r0, cpu = stats()["retries"], cpu_seconds()
        await asyncio.sleep(1.0)
        retries = stats()["retries"] - r0
        used = cpu_seconds() - cpu
        assert 20 <= retries <= 300, retries         # ~100 (every 10 ms), not ~10,000
        assert used < 0.3, used
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert lk.statistics().waiters == 0

    run(main())


def _mapped(name: str) -> bool:
    # by inode: a segment made unnamed (O_TMPFILE) and named when complete is shown in
    # /proc/self/maps as "/dev/shm/#INO (deleted)" by the process that created it
    st = os.stat(f"/dev/shm/{name}")
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/dev/shm/") and \
                    int(parts[4]) == st.st_ino:
                return True
    return False


@pytest.mark.parametrize("what", ["handle", "zone"])
def test_close_while_waiting(name, procs, what):
    """Closing the handles (or the zone) that coroutines wait through wakes them with
    ClosedError; the zone's mapping stays while they wait, and goes once the waits and
    the handles are done."""
    zone = shmkit.Zone(name, 4 << 20)
    try:
        lk, ev, sem = zone.lock("l"), zone.event("e"), zone.semaphore("s", 0)
        cond, board = zone.condition("c"), zone.board("b", 64)
        rw, bar = zone.rwlock("rw"), zone.barrier("bar", 2)
        held = zone.event("held")
        handles = [lk, ev, sem, cond, cond.lock, board, rw, bar, held]

        async def cond_wait():
            async with cond.aio:
                await cond.aio.wait(60)

        async def main():
            child = SPAWN.Process(target=hold_lock, args=(name, "l", "lock", "held", None, 60))
            child.start()
            procs.append(child)
            await until(held.is_set, timeout=30, what="the child holds the lock")
            rw.acquire_write()
            waits = {
                "lock": lk.aio.acquire(timeout=60), "event": ev.aio.wait(60),
                "sem": sem.aio.acquire(timeout=60), "board": board.aio.wait_newer(0, 60),
                "rwlock": _other_process_rw(rw), "barrier": bar.aio.wait(60),
                "condition": cond_wait(),
            }
            tasks = {k: asyncio.ensure_future(c) for k, c in waits.items()}
            await until(lambda: stats()["waits"] == len(tasks), what="all waiting")
            if what == "handle":
                for h in (lk, ev, sem, cond, board, rw, bar):
                    h.close()
            else:
                zone.close()
                assert zone.closed
            assert _mapped(name)
            for k, t in tasks.items():
                with pytest.raises(shmkit.ClosedError):
                    await asyncio.wait_for(t, 10)
            assert stats()["waits"] == 0
            with pytest.raises(shmkit.ClosedError):
                await (ev.aio.wait(1) if what == "zone" else lk.aio.acquire())

        run(main())
        zone.close()
        for h in handles:
            h.close()
        assert not _mapped(name), "the zone stayed mapped after every wait and handle ended"
    finally:
        zone.close()
        try:
            os.unlink(f"/dev/shm/{name}")
        except FileNotFoundError:
            pass


async def _other_process_rw(rw):
    # held for writing by this process: a read waits (as a reader of another process would)
    return await rw.aio.acquire_read(timeout=60)


def test_after_fork_the_child_has_its_own_hub(zone, procs):
    """A child forked from a process whose coroutines wait gets a hub of its own."""
    ev, back = zone.event("e"), zone.event("back")

    def child():
        async def main():
            assert await ev.aio.wait(30)
            back.set()
        asyncio.run(main())

    async def main():
        w = asyncio.ensure_future(ev.aio.wait(30))
        await until(lambda: stats()["waits"] == 1, what="the parent waits")
        p = mp.get_context("fork").Process(target=child)
        p.start()
        procs.append(p)
        await asyncio.sleep(0.3)
        ev.set()
        assert await w
        assert await asyncio.get_running_loop().run_in_executor(None, back.wait, 30)
        p.join(10)
        assert p.exitcode == 0

    run(main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fallback_without_futex_waitv(zone, loop_kind):
    """The fallback (as on kernels before 5.16), forced: a thread per word up to
    max_threads, then threads take turns; every waiter still wakes."""
    code = textwrap.dedent(f"""
        import asyncio, multiprocessing as mp, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import shmkit
        from aio_support import run, set_events, threads, until
        print(shmkit.aio_configure(mode="fallback", max_threads=4))
        z = shmkit.Zone({zone.name!r}, 4 << 20)
        names = [f"f{{i}}" for i in range(12)]
        evs = [shmkit.Event(n, zone=z) for n in names]
        lk = shmkit.Lock("fl", zone=z)
        before = threads()

        async def main():
            assert shmkit.aio_statistics()["mode"] == "fallback"
            tasks = [asyncio.ensure_future(e.aio.wait(60)) for e in evs for _ in range(3)]
            lk.acquire()
            lt = asyncio.ensure_future(lk.aio.acquire(timeout=60))
            await until(lambda: shmkit.aio_statistics()["waits"] == 37, what="all waiting")
            assert shmkit.aio_statistics()["threads"] == 4
            assert threads() - before <= 4
            p = mp.get_context("spawn").Process(target=set_events, args=({zone.name!r}, names, 0.1))
            p.start()
            assert all(await asyncio.gather(*tasks))
            lk.release()
            assert await lt
            p.join(10)
            print("ok", shmkit.aio_statistics())

        run(main(), {loop_kind!r})
    """)
    r = run_python(code, timeout=120)
    assert "ok" in r.stdout, r.stdout + r.stderr


def test_hub_modes_and_settings():
    st = stats()
    assert st["mode"] in ("futex_waitv", "fallback")
    if st["mode"] == "futex_waitv":
        assert st["futex_waitv_supported"]
    with pytest.raises(ValueError):
        shmkit.aio_configure(mode="epoll")
    with pytest.raises(ValueError):
        shmkit.aio_configure(max_threads=-1)
    assert shmkit.aio_configure()["spin"] is True

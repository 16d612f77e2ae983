"""Awaitable twins of Board and SharedConfig (issue 16), with the values published by
another process; timeouts raise ShmkitTimeoutError as the blocking calls do; closing the
board while a coroutine waits on it raises ClosedError."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest

import shmkit
from aio_support import LOOPS, run, until

SPAWN = mp.get_context("spawn")


@pytest.fixture(params=LOOPS)
def loop_kind(request):
    return request.param


def publish_later(zname, bname, values, delay, config=False):
    import shmkit
    z = shmkit.Zone(zname, 4 << 20)
    b = shmkit.SharedConfig(bname, zone=z) if config else shmkit.Board(bname, 4096, zone=z)
    for v in values:
        time.sleep(delay)
        b.publish(v)


def test_board_wait_newer(zone, procs, loop_kind):
    board = zone.board("b", 4096)

    async def main():
        with pytest.raises(shmkit.ShmkitTimeoutError):
            await board.aio.wait_newer(0, timeout=0.1)
        p = SPAWN.Process(target=publish_later, args=(zone.name, "b", [b"one", b"two"], 0.2))
        p.start()
        procs.append(p)
        value, version = await board.aio.wait_newer(0, timeout=30)
        assert (value, version) == (b"one", 1)
        value, version = await board.aio.wait_newer(version, timeout=30, copy=False)
        assert bytes(value) == b"two" and version == 2
        assert await board.aio.wait_newer(1) == (board.read(copy=False)[0], 2)  # at once
        assert await board.aio.wait(1) == 2
        with pytest.raises(shmkit.ShmkitTimeoutError):
            await board.aio.wait(2, timeout=0.05)
        p.join(10)

    run(main(), loop_kind)
    assert board.statistics().waiters == 0


def test_config_wait_for_change(zone, procs, loop_kind):
    cfg = zone.config("c")

    async def main():
        p = SPAWN.Process(target=publish_later,
                          args=(zone.name, "c", [{"a": 1}, {"a": 2}], 0.2, True))
        p.start()
        procs.append(p)
        snap, version = await cfg.aio.wait_for_change(0, timeout=30)
        assert snap["a"] == 1 and version == 1
        snap, version = await cfg.aio.wait_changed(version, timeout=30)
        assert snap["a"] == 2 and version == 2
        with pytest.raises(shmkit.ShmkitTimeoutError):
            await cfg.aio.wait_for_change(timeout=0.05)   # default: the current version
        p.join(10)

    run(main(), loop_kind)


def test_board_closed_while_waiting(zone):
    board = zone.board("b", 4096)

    async def main():
        w = asyncio.ensure_future(board.aio.wait_newer(0, timeout=30))
        await until(lambda: shmkit.aio_statistics()["waits"] == 1, what="the wait")
        board.close()
        with pytest.raises(shmkit.ClosedError):
            await w
        with pytest.raises(shmkit.ClosedError):
            await board.aio.wait_newer(0)

    run(main())
    assert shmkit.aio_statistics()["waits"] == 0

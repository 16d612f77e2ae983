"""Connection loss: a real redis-server (persistence on: appendonly, appendfsync always)
killed and restarted while RedisZone objects are in use.  What was acknowledged (a call
that returned) is still there afterwards; a call in flight raises
BackendConnectionError; blocking waits ride through the restart."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import signal
import tempfile
import threading
import time

import pytest

from shmkit import QueueEmpty, RedisZone
from shmkit.redis import BackendConnectionError

from redis_support import REDIS_SERVER, UNDER_SANITIZER, RedisProcess, free_port

pytestmark = [pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
              pytest.mark.skipif(UNDER_SANITIZER, reason="the Redis backend is pure Python: "
                                 "run by make test, not make sanitize")]


@pytest.fixture
def persistent_redis():
    d = tempfile.mkdtemp(prefix="shmkit-redis-aof-")
    server = RedisProcess(free_port(), d, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def _blocked_get(zone, out):
    q = zone.queue("jobs")
    try:
        out.put(q.get(timeout=60))
    except Exception as e:  # reported to the test
        out.put(f"{type(e).__name__}: {e}")


def test_nothing_acknowledged_is_lost_across_a_kill_9(persistent_redis):
    zone = RedisZone("restart", persistent_redis.url, lease=2, socket_timeout=5,
                     socket_connect_timeout=2)
    q = zone.queue("jobs")
    d = zone.dict("d")
    c = zone.counter("c")
    acked, failed = [], []
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set() and i < 200_000:
            msg = f"m{i}".encode()
            try:
                q.put(msg)
                d[f"k{i}"] = i
                c.add(1)
                acked.append(i)
            except BackendConnectionError:
                failed.append(i)
                time.sleep(0.05)
            i += 1

    t = threading.Thread(target=produce)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 300:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        persistent_redis.kill()                 # SIGKILL: no shutdown, no final save
        time.sleep(0.5)
        persistent_redis.start()                # same port, same directory: replays the AOF
        deadline = time.monotonic() + 60
        n = len(acked)
        while len(acked) < n + 100:
            assert time.monotonic() < deadline, "no put succeeded after the restart"
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(60)
    assert failed, "the restart went unnoticed (the test did not test anything)"
    got = set()
    while True:
        try:
            got.update(q.get_many(10_000, block=False))
        except QueueEmpty:
            break
    lost = [i for i in acked if f"m{i}".encode() not in got]
    assert not lost, f"{len(lost)} acknowledged puts lost, e.g. {lost[:5]}"
    assert all(d[f"k{i}"] == i for i in acked[::97])
    assert c.get() >= len(acked)
    zone.destroy_all()
    zone.close()


def test_blocking_get_rides_through_a_restart(persistent_redis):
    zone = RedisZone("restart2", persistent_redis.url, lease=2)
    q = zone.queue("jobs")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_blocked_get, args=(zone, out))
    p.start()
    try:
        deadline = time.monotonic() + 60
        while q.statistics().consumers == 0:        # the child is registered and blocked
            assert time.monotonic() < deadline
            time.sleep(0.05)
        persistent_redis.restart(signal.SIGTERM)
        q.put(b"after the restart")
        assert out.get(timeout=60) == b"after the restart"
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    zone.destroy_all()
    zone.close()


def test_calls_while_down_raise_and_recover(persistent_redis):
    zone = RedisZone("restart3", persistent_redis.url, socket_connect_timeout=1)
    d = zone.dict("d")
    d["a"] = 1
    lock = zone.lock("l")
    persistent_redis.stop()
    t0 = time.monotonic()
    with pytest.raises(BackendConnectionError):
        d["a"]
    with pytest.raises(ConnectionError):
        lock.acquire(timeout=0.5)                 # a wait that ends while still down
    assert time.monotonic() - t0 < 10
    persistent_redis.start()
    assert d["a"] == 1                             # reconnects by itself
    zone.destroy_all()
    zone.close()

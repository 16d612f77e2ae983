"""What only the Redis locks have: leases renewed while the holder lives, fencing tokens,
a holder that is partitioned (stopped) losing the lock, waiters that block server-side."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from shmkit import NotOwnerError


def _hold(zone, kind, name, seconds, out):
    lock = getattr(zone, kind)(name)
    lock.acquire()
    out.put(("held", lock.fencing_token))
    time.sleep(seconds)
    lock.release()
    out.put(("released", None))


def _hold_unit(zone, name, out):
    s = zone.semaphore(name, 1)
    s.acquire()
    out.put(("held", s.fencing_token))
    time.sleep(120)


@pytest.fixture
def ctx():
    return mp.get_context("spawn")


@pytest.fixture
def children():
    started = []
    yield started
    for p in started:
        if p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.join(10)


def _blpop_calls(zone) -> int:
    stats = zone.execute("INFO", "commandstats")
    return int(stats.get("cmdstat_blpop", {}).get("calls", 0))


@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_lease_is_renewed_while_the_holder_lives(redis_zone, ctx, children, kind):
    zone = redis_zone(lease=1.0)
    out = ctx.Queue()
    p = ctx.Process(target=_hold, args=(zone, kind, "l", 3.5, out))
    p.start()
    children.append(p)
    assert out.get(timeout=60)[0] == "held"
    lock = getattr(zone, kind)("l")
    t0 = time.monotonic()
    assert lock.acquire(timeout=2.5) is False, "the lease ran out although its holder lives"
    assert out.get(timeout=30)[0] == "released"
    assert lock.acquire(timeout=5)
    assert not lock.owner_died
    assert time.monotonic() - t0 < 6
    lock.release()


@pytest.mark.parametrize("where", ["server", "cluster"])
def test_fencing_tokens_increase_and_owner_death(where, request, ctx, children):
    zone = request.getfixturevalue("redis_zone" if where == "server" else "cluster_zone")()
    lock = zone.lock("l")
    tokens = []
    for _ in range(3):
        lock.acquire()
        tokens.append(lock.fencing_token)
        lock.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    out = ctx.Queue()
    p = ctx.Process(target=_hold, args=(zone, "lock", "l", 120, out))
    p.start()
    children.append(p)
    what, dead_token = out.get(timeout=60)
    assert dead_token > tokens[-1]
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert lock.acquire(timeout=zone.lease + 1)
    assert time.monotonic() - t0 <= zone.lease + 1
    assert lock.owner_died and lock.fencing_token > dead_token
    s = lock.statistics()
    assert s.owner_deaths == 1 and s.last_dead_owner.split(":")[1] == str(p.pid)
    lock.release()


def test_partitioned_holder_loses_the_lock_and_cannot_release_it(redis_zone, ctx, children):
    zone = redis_zone(lease=1.0)
    out = ctx.Queue()
    p = ctx.Process(target=_hold, args=(zone, "lock", "l", 2.5, out))
    p.start()
    children.append(p)
    _, their_token = out.get(timeout=60)
    os.kill(p.pid, signal.SIGSTOP)           # no renewals any more, as if cut off
    lock = zone.lock("l")
    assert lock.acquire(timeout=zone.lease + 1)
    assert lock.owner_died and lock.fencing_token > their_token
    os.kill(p.pid, signal.SIGCONT)
    p.join(30)
    assert p.exitcode != 0                   # its release() raised NotOwnerError
    assert lock.locked()
    lock.release()


def test_waiters_block_server_side_and_wake_on_release(redis_zone, ctx, children):
    zone = redis_zone(lease=10.0)
    out = ctx.Queue()
    p = ctx.Process(target=_hold, args=(zone, "lock", "l", 3.0, out))
    p.start()
    children.append(p)
    assert out.get(timeout=60)[0] == "held"
    lock = zone.lock("l")
    before = _blpop_calls(zone)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    assert lock.acquire(timeout=30)
    waited = time.monotonic() - t0
    assert out.get(timeout=30)[0] == "released"
    # woken by the release (not by a poll or by the lease), without spinning
    assert 1.5 < waited < 4.5
    assert _blpop_calls(zone) - before <= 4, "the waiter polled"
    assert time.process_time() - cpu0 < 0.5
    lock.release()


def test_release_by_non_owner(redis_zone):
    zone = redis_zone()
    lock = zone.lock("l")
    with pytest.raises(NotOwnerError):
        lock.release()
    r = zone.rlock("r")
    r.acquire()
    import threading
    errors = []

    def other_thread():
        try:
            r.release()
        except NotOwnerError as e:
            errors.append(e)
    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors, "another thread released an RLock it does not hold"
    r.release()


def test_semaphore_units_of_a_dead_process_come_back(redis_zone, ctx, children):
    zone = redis_zone()
    s = zone.semaphore("s", 1)
    out = ctx.Queue()
    p = ctx.Process(target=_hold_unit, args=(zone, "s", out))
    p.start()
    children.append(p)
    _, their_token = out.get(timeout=60)
    assert s.acquire(False) is False
    os.kill(p.pid, signal.SIGKILL)
    assert s.acquire(timeout=zone.lease + 1)
    assert s.owner_died and s.fencing_token > their_token
    assert s.statistics().reclaimed == 1
    s.release()
    assert s.get_value() == 1


def test_timeouts_follow_threading(redis_zone):
    lock = redis_zone().lock("l")
    with pytest.raises(ValueError):
        lock.acquire(timeout=-2)
    with pytest.raises(OverflowError):
        lock.acquire(timeout=1e100)
    with pytest.raises(TypeError):
        lock.acquire(timeout="1")

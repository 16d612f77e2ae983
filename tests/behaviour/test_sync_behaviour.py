"""Locks, semaphores, events, counters, dicts, boards and configs: the same behaviour on
a local Zone and on a RedisZone (single server, cluster), across real processes."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest

from shmkit import NotOwnerError, ObjectTypeError, ShmkitTimeoutError

from .test_queue_behaviour import interrupt_and_collect, run_blocked_child


# -- children ------------------------------------------------------------------------------

def _hold_lock(zone, kind, name, held):
    lock = getattr(zone, kind)(name)
    lock.acquire()
    held.set()
    time.sleep(120)          # SIGKILLed here, holding the lock


def _try_lock(zone, name, out):
    out.put(zone.lock(name).acquire(False))


def _release_lock(zone, name, out):
    try:
        zone.lock(name).release()
        out.put("released")
    except RuntimeError as e:
        out.put(type(e).__name__)


def _add_many(zone, name, n):
    c = zone.counter(name)
    for _ in range(n):
        c.add(1)


def _incr_many(zone, name, n):
    d = zone.dict(name)
    for _ in range(n):
        d.incr("hits", 1, init=0)


def _race_add(zone, name, me, start, out):
    d = zone.dict(name)
    start.wait(60)
    out.put((me, d.add("winner", me), d.incr("entrants", 1, init=0)))


def _set_event_later(zone, name, delay):
    time.sleep(delay)
    zone.event(name).set()


def _publish_later(zone, name, value, delay):
    time.sleep(delay)
    zone.board(name, 1 << 20).publish(value)


def _sem_hold(zone, name, held):
    s = zone.semaphore(name, 2)
    s.acquire()
    held.set()
    time.sleep(120)


# -- locks ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_lock_basics(backend, kind):
    lock = getattr(backend.zone(), kind)("l")
    assert lock.acquire()
    assert lock.locked() if kind == "lock" else True
    lock.release()
    with lock:
        pass
    with pytest.raises(NotOwnerError):
        lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_rlock_is_reentrant(backend):
    r = backend.zone().rlock("r")
    assert r.acquire() and r.acquire(timeout=1)
    r.release()
    r.release()
    with pytest.raises(NotOwnerError):
        r.release()


def test_lock_is_exclusive_across_processes(backend, spawn):
    zone = backend.zone()
    lock = zone.lock("l")
    out = spawn.ctx.Queue()
    lock.acquire()
    p = spawn(_try_lock, zone, "l", out)
    assert out.get(timeout=60) is False
    p.join(30)
    r = spawn(_release_lock, zone, "l", out)
    assert out.get(timeout=60) == "NotOwnerError"     # a non-owner may not release
    r.join(30)
    lock.release()
    p = spawn(_try_lock, zone, "l", out)
    assert out.get(timeout=60) is True
    p.join(30)


def test_lock_acquire_timeout(backend, spawn):
    zone = backend.zone()
    held = spawn.ctx.Event()
    spawn(_hold_lock, zone, "lock", "l", held)
    assert held.wait(60)
    lock = zone.lock("l")
    t0 = time.monotonic()
    assert lock.acquire(timeout=0.3) is False
    assert 0.25 <= time.monotonic() - t0 < 3
    assert lock.acquire(False) is False
    with pytest.raises(ValueError):
        lock.acquire(False, 1)


@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_holder_killed_next_acquirer_sees_owner_died(backend, spawn, kind):
    zone = backend.zone()
    held = spawn.ctx.Event()
    p = spawn(_hold_lock, zone, kind, "l", held)
    assert held.wait(60)
    lock = getattr(zone, kind)("l")
    assert lock.acquire(False) is False
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert lock.acquire(timeout=backend.death_grace + 1)
    took = time.monotonic() - t0
    assert lock.owner_died
    assert took <= backend.death_grace + 1
    lock.release()
    assert lock.acquire() and not lock.owner_died
    lock.release()


def test_lock_acquire_interrupted_by_ctrl_c(backend, spawn):
    zone = backend.zone()
    held = spawn.ctx.Event()
    spawn(_hold_lock, zone, "lock", "l", held)
    assert held.wait(60)
    p = run_blocked_child(zone, "zone.lock('l').acquire()")
    took, rc, out, err = interrupt_and_collect(p)
    assert rc == 7, (out, err)
    assert took < 5


# -- semaphores, events, counters -------------------------------------------------------------

def test_semaphore_counts_across_processes(backend, spawn):
    zone = backend.zone()
    s = zone.semaphore("s", 2)
    held = spawn.ctx.Event()
    spawn(_sem_hold, zone, "s", held)
    assert held.wait(60)
    assert s.acquire(timeout=1)
    assert s.acquire(False) is False
    assert s.get_value() == 0
    s.release()
    assert s.get_value() == 1


def test_bounded_semaphore(backend):
    zone = backend.zone()
    b = zone.bounded_semaphore("b", 1)
    with pytest.raises(ValueError):
        b.release()
    with b:
        assert b.get_value() == 0
    assert b.get_value() == 1
    with pytest.raises(ObjectTypeError):
        zone.semaphore("b", 1)


# threading's argument rules (tests/test_sync_conformance.py compares the local objects
# with threading call by call; these are the cases both backends must agree on)
@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_lock_timeout_rules(backend, kind):
    lock = getattr(backend.zone(), kind)("l")
    for timeout, exc in ((1e100, OverflowError), (math.inf, OverflowError),
                         (threading.TIMEOUT_MAX * 2, OverflowError), (math.nan, ValueError),
                         (-0.5, ValueError), ("1", TypeError)):
        with pytest.raises(exc):
            lock.acquire(True, timeout)
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 0)
    assert lock.acquire(False, -1) is True
    assert lock.acquire(True, None) is True if kind == "rlock" else lock.acquire(False) is False
    if kind == "rlock":
        lock.release()
    assert lock.acquire(timeout=0) is (kind == "rlock")
    if kind == "rlock":
        lock.release()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_semaphore_timeout_and_count_rules(backend):
    zone = backend.zone()
    s = zone.semaphore("s", 1)
    for timeout in (-1, 0, 0.5, None):       # blocking=False takes no timeout but None
        if timeout is None:
            assert s.acquire(False, timeout) is True
            s.release()
        else:
            with pytest.raises(ValueError, match="non-blocking"):
                s.acquire(False, timeout)
    assert s.acquire(True, -0.5) is True     # <= 0: one attempt (threading's Semaphore)
    assert s.acquire(True, -1) is False      # empty now: -1 is no "for ever" here
    assert s.acquire(True, 0) is False
    for timeout, exc in ((1e100, OverflowError), (math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(exc):
            s.acquire(True, timeout)
    for n, exc in ((0, ValueError), (-1, ValueError), (1.5, TypeError)):
        with pytest.raises(exc):
            s.release(n)
    s.release(2)
    assert s.get_value() == 2
    for value, exc in ((-1, ValueError), (2**70, OverflowError), (1.5, TypeError)):
        with pytest.raises(exc):
            zone.semaphore(f"bad-{exc.__name__}-{value!r}", value)
    b = zone.bounded_semaphore("b", 1)
    with pytest.raises(ValueError, match="too many"):
        b.release(2**70)


def test_event_wait_rules(backend):
    e = backend.zone().event("e")
    assert e.wait(-1) is False and e.wait(0) is False
    for timeout, exc in ((1e100, OverflowError), (math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(exc):
            e.wait(timeout)
    e.set()
    assert e.wait(1e100) is True             # set: no wait, as threading.Event.wait


def test_event_set_by_another_process(backend, spawn):
    zone = backend.zone()
    e = zone.event("e")
    assert not e.is_set()
    assert e.wait(0.2) is False
    spawn(_set_event_later, zone, "e", 0.3)
    t0 = time.monotonic()
    assert e.wait(30) is True
    assert time.monotonic() - t0 < 20
    assert e.is_set()
    e.clear()
    assert not e.is_set()


def test_counter_is_exact_under_concurrent_adds(backend, spawn):
    zone = backend.zone()
    c = zone.counter("c", 10)
    procs = [spawn(_add_many, zone, "c", 500) for _ in range(4)]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert c.get() == 10 + 4 * 500
    assert c.exchange(5) == 2010
    assert c.compare_and_swap(5, 7) and not c.compare_and_swap(5, 9)
    c += 3
    assert int(c) == 10 and c.sub(10) == 0 and c.inc() == 1 and c.dec() == 0


# -- dict -------------------------------------------------------------------------------------

def test_dict_surface(backend):
    d = backend.zone().dict("cache")
    values = {"b": b"\x00bytes", "s": "text", "i": -42, "big": 2 ** 80, "f": 1.5, "t": True,
              "n": None, "o": {"a": (1, 2)}}
    for k, v in values.items():
        d[k] = v
    d[b"s"] = "a bytes key"
    for k, v in values.items():
        got = d[k]
        assert got == v and type(got) is type(v)
    assert d[b"s"] == "a bytes key" and "s" in d and b"zz" not in d
    assert len(d) == len(values) + 1
    assert set(d.keys(0)) == set(values) | {b"s"}
    assert d.add("i", 1) is False and d.add("new", 1) is True
    assert d.replace("missing", 1) is False and d.replace("new", 2) is True
    assert d.incr("new", 3) == 5 and d.incr("f", 1) == 2.5
    assert d.incr("absent", 2, init=10) == 12
    with pytest.raises(KeyError):
        d.incr("nope")
    with pytest.raises(ObjectTypeError):
        d.incr("s")
    assert d.delete("new") and not d.delete("new")
    assert d.get("new", "dflt") == "dflt"
    d.set("ttl", b"x", ttl=0.2, flags=3)
    assert 0 < d.ttl("ttl") <= 0.2 and d.get_with_flags("ttl") == (b"x", 3)
    assert d.ttl("i") is None
    assert d.expire("i", 10) and 9 < d.ttl("i") <= 10 and d.expire("i", 0) and d.ttl("i") is None
    deadline = time.monotonic() + 5
    while "ttl" in d and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "ttl" not in d and d.get("ttl") is None
    assert d.lpush("L", 1) == 1 and d.rpush("L", "two") == 2 and d["L"] == [1, "two"]
    assert d.llen("L") == 2 and d.lpop("L") == 1 and d.rpop("L") == "two" and d.lpop("L") is None
    assert d.setdefault("sd", 1) == 1 and d.setdefault("sd", 2) == 1 and d.pop("sd") == 1
    d.clear()
    assert len(d) == 0 and d.free_space() <= d.capacity()


def test_dict_incr_is_atomic_across_processes(backend, spawn):
    zone = backend.zone()
    d = zone.dict("counts")
    procs = [spawn(_incr_many, zone, "counts", 300) for _ in range(3)]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert d["hits"] == 900


def test_dict_add_is_atomic_across_processes(backend, spawn):
    zone = backend.zone()
    d = zone.dict("race")
    start, out = spawn.ctx.Event(), spawn.ctx.Queue()
    procs = [spawn(_race_add, zone, "race", i, start, out) for i in range(3)]
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    winners = [me for me, won, _ in results if won]
    assert len(winners) == 1 and d["winner"] == winners[0]
    assert sorted(n for _, _, n in results) == [1, 2, 3] and d["entrants"] == 3
    assert d.replace("winner", -1) and d["winner"] == -1


# -- board and config ---------------------------------------------------------------------------

def test_board_wait_newer_across_processes(backend, spawn):
    zone = backend.zone()
    b = zone.board("frames", 1 << 20)
    assert b.read() == (None, 0)
    spawn(_publish_later, zone, "frames", {"frame": 1}, 0.3)
    value, version = b.wait_newer(0, timeout=30)
    assert value == {"frame": 1} and version == 1
    assert b.read_if_newer(1) is None
    with pytest.raises(ShmkitTimeoutError):
        b.wait_newer(1, timeout=0.2)


def test_config(backend):
    zone = backend.zone()
    cfg = zone.config("app")
    v = cfg.publish({"workers": 4, "hosts": ["a", "b"]})
    snap, version = cfg.read()
    assert version == v and snap["workers"] == 4 and snap["hosts"] == ("a", "b")
    assert cfg["workers"] == 4 and len(cfg) == 2

"""RWLock, Semaphore/BoundedSemaphore, Event, Condition and Barrier across processes,
and SIGINT interrupting every blocking call."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import kill_hard, wait_until

import shmkit
from shmkit import (Barrier, BoundedSemaphore, BrokenBarrierError, Condition, Event,
                    NotOwnerError, ObjectTypeError, RWLock, Semaphore)


def _fork(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def _reap(*pids):
    for p in pids:
        kill_hard(p)
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass


# ---- RWLock ---------------------------------------------------------------------------------

def _reader(rw, inside, peak, hold):
    with rw.read_lock():
        now = inside.inc()
        while True:                      # record the most readers seen inside at once
            top = peak.get()
            if now <= top or peak.compare_and_swap(top, now):
                break
        time.sleep(hold)
        inside.dec()


def _writer(rw, inside, violations, n):
    for _ in range(n):
        with rw.write_lock():
            if inside.inc() != 1:
                violations.inc()
            time.sleep(0.001)
            inside.dec()


def test_rwlock_readers_concurrent_writers_exclusive(ctx, zone, procs):
    rw = zone.rwlock("rw")
    assert isinstance(rw, RWLock)
    inside, peak, violations = zone.counter("in"), zone.counter("peak"), zone.counter("bad")
    readers = [ctx.Process(target=_reader, args=(rw, inside, peak, 0.5)) for _ in range(3)]
    procs.extend(readers)
    for p in readers:
        p.start()
    for p in readers:
        p.join(60)
        assert p.exitcode == 0
    assert peak.get() >= 2, "readers never held the lock together"
    inside.set(0)
    writers = [ctx.Process(target=_writer, args=(rw, inside, violations, 20)) for _ in range(2)]
    readers = [ctx.Process(target=_reader, args=(rw, inside, peak, 0.01)) for _ in range(2)]
    # readers and writers together: a reader inside bumps `inside` too, so a writer that
    # sees anything but 1 found company
    procs.extend(writers + readers)
    for p in writers + readers:
        p.start()
    for p in writers + readers:
        p.join(60)
        assert p.exitcode == 0
    assert violations.get() == 0
    st = rw.statistics()
    assert st.write_acquisitions == 40 and st.readers == 0 and st.writer_pid == 0


def test_rwlock_writer_not_starved(zone):
    rw = zone.rwlock("rw")
    stop = zone.event("stop")
    got = zone.counter("writer-got")

    def reader_loop():
        while not stop.is_set():
            rw.acquire_read()
            time.sleep(0.002)
            rw.release_read()

    readers = [_fork(reader_loop) for _ in range(3)]
    try:
        time.sleep(0.05)
        t0 = time.monotonic()
        assert rw.acquire_write(timeout=5), "writer starved by a stream of readers"
        waited = time.monotonic() - t0
        got.inc()
        rw.release_write()
        assert waited < 2.0
    finally:
        stop.set()
        deadline = time.monotonic() + 10
        for p in readers:
            while time.monotonic() < deadline and os.waitpid(p, os.WNOHANG) == (0, 0):
                time.sleep(0.005)
        _reap(*readers)


def test_rwlock_errors_and_try(zone):
    rw = zone.rwlock("rw", max_readers=2)
    with pytest.raises(NotOwnerError):
        rw.release_read()
    with pytest.raises(NotOwnerError):
        rw.release_write()
    assert rw.acquire_write()
    assert rw.acquire_read(blocking=False) is False
    assert rw.acquire_write(timeout=0.02) is False
    rw.release_write()
    assert rw.acquire_read() and rw.acquire_read()
    assert rw.statistics().readers == 2 and rw.statistics().reader_processes == 1
    assert rw.acquire_write(blocking=False) is False
    rw.release_read()
    rw.release_read()
    assert rw.max_readers == 2
    assert "reader" in repr(rw)
    again = pickle.loads(pickle.dumps(rw))
    assert again._offset == rw._offset


def test_rwlock_reader_slots_of_dead_processes_are_reused(zone):
    rw = zone.rwlock("rw", max_readers=2)
    for _ in range(5):                       # more dead readers than slots
        pid = _fork(lambda: (rw.acquire_read(), time.sleep(60)))
        wait_until(lambda: rw.statistics().readers >= 1)
        _reap(pid)
        pid2 = _fork(lambda: rw.acquire_read())   # exits holding it
        os.waitpid(pid2, 0)
        assert rw.acquire_write(timeout=5)
        rw.release_write()
    assert rw.statistics().reader_deaths >= 5


# ---- Semaphore ---------------------------------------------------------------------------

def test_semaphore_counts(zone):
    s = zone.semaphore("s", 2)
    assert isinstance(s, Semaphore) and s.get_value() == 2
    assert s.acquire() and s.acquire()
    assert s.acquire(blocking=False) is False
    t0 = time.monotonic()
    assert s.acquire(timeout=0.1) is False
    assert 0.1 <= time.monotonic() - t0 < 0.2
    s.release(2)
    assert s.value == 2
    with s:
        assert s.get_value() == 1
    s.release()                              # plain semaphores may go above the start
    assert s.get_value() == 3
    with pytest.raises(ValueError):
        s.release(0)
    with pytest.raises(ValueError, match="non-blocking"):
        s.acquire(False, 1)
    st = s.statistics()
    assert st.value == 3 and st.initial == 2 and not st.bounded and not st.undo


def test_bounded_semaphore(zone):
    b = zone.bounded_semaphore("b", 1)
    assert isinstance(b, BoundedSemaphore)
    with pytest.raises(ValueError, match="too many"):
        b.release()
    b.acquire()
    b.release()
    with pytest.raises(ObjectTypeError):
        zone.semaphore("b")
    with pytest.raises(ObjectTypeError):
        zone.bounded_semaphore(zone.semaphore("plain").name)


def test_semaphore_wakes_waiters_across_processes(ctx, zone, procs):
    s, done = zone.semaphore("s", 0), zone.counter("done")
    ps = [ctx.Process(target=_take_and_count, args=(s, done)) for _ in range(3)]
    procs.extend(ps)
    for p in ps:
        p.start()
    wait_until(lambda: s.statistics().waiters >= 1, 30)
    s.release(3)
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert done.get() == 3 and s.get_value() == 0


def _take_and_count(s, done):
    assert s.acquire(timeout=30)
    done.inc()


def test_undo_semaphore_gives_back_dead_units(zone):
    s = zone.semaphore("u", 3, undo=True, max_processes=4)
    pid = _fork(lambda: (s.acquire(), s.acquire(), time.sleep(60)))
    wait_until(lambda: s.get_value() == 1)
    assert s.acquire() and s.get_value() == 0
    assert s.statistics().held_here if hasattr(s.statistics(), "held_here") else True
    _reap(pid)
    assert s.reclaim() == 2
    assert s.get_value() == 2
    st = s.statistics()
    assert st.reclaimed == 2 and st.dead_owners == 1 and st.undo
    s.release()
    assert s.get_value() == 3
    with pytest.raises(shmkit.ObjectMismatchError):
        zone.semaphore("u", 3, undo=False)


def test_undo_semaphore_waiter_reclaims_by_itself(zone):
    s = zone.semaphore("u", 1, undo=True)
    pid = _fork(lambda: (s.acquire(), time.sleep(60)))
    wait_until(lambda: s.get_value() == 0)
    t = threading.Timer(0.05, lambda: kill_hard(pid))
    t.start()
    try:
        assert s.acquire(timeout=5)
    finally:
        t.join()
        _reap(pid)
    s.release()


# ---- Event -------------------------------------------------------------------------------

def test_event_basics(zone):
    e = zone.event("e")
    assert isinstance(e, Event) and not e.is_set()
    assert e.wait(0) is False
    t0 = time.monotonic()
    assert e.wait(0.05) is False
    assert 0.05 <= time.monotonic() - t0 < 0.15
    e.set()
    e.set()
    assert e.is_set() and e.wait() and e.wait(0)
    e.clear()
    assert not e.is_set()
    assert e.statistics().sets == 1


def test_event_set_then_clear_still_releases_waiter(zone):
    e = zone.event("e")
    results = []
    t = threading.Thread(target=lambda: results.append(e.wait(10)))
    t.start()
    wait_until(lambda: e.statistics().waiters >= 1)
    e.set()
    e.clear()
    t.join(10)
    assert results == [True]


def _wait_event(e, out):
    out.add(1 if e.wait(30) else 100)


def test_event_wakes_every_process(ctx, zone, procs):
    e, out = zone.event("e"), zone.counter("out")
    ps = [ctx.Process(target=_wait_event, args=(e, out)) for _ in range(3)]
    procs.extend(ps)
    for p in ps:
        p.start()
    wait_until(lambda: e.statistics().waiters >= 3, 30)
    e.set()
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert out.get() == 3


# ---- Condition ---------------------------------------------------------------------------

def _producer(cond, items, count, n):
    for i in range(n):
        with cond:
            items.add(1)
            cond.notify()


def _consumer(cond, items, got, n):
    for _ in range(n):
        with cond:
            assert cond.wait_for(lambda: items.get() > 0, timeout=30)
            items.sub(1)
            got.inc()


def test_condition_producer_consumer(ctx, zone, procs):
    cond = zone.condition("c")
    items, got = zone.counter("items"), zone.counter("got")
    ps = [ctx.Process(target=_consumer, args=(cond, items, got, 100)) for _ in range(2)]
    ps += [ctx.Process(target=_producer, args=(cond, items, None, 100)) for _ in range(2)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    assert got.get() == 200 and items.get() == 0


def test_condition_with_a_named_lock(zone):
    lock = zone.lock("the-lock")
    c = zone.condition("c", lock)
    assert c.lock is lock
    again = Condition("c", zone=zone)              # finds the recorded lock
    assert again.lock.name == "the-lock" and type(again.lock) is shmkit.Lock
    with pytest.raises(shmkit.ObjectMismatchError):
        zone.condition("c", zone.lock("another"))
    with pytest.raises(ValueError):
        zone.condition(zone.condition("own").name, lock)
    with pytest.raises(TypeError):
        zone.condition("x", object())
    with c:
        assert lock.locked()
        assert c.wait(0.01) is False
        assert lock.locked()
    assert not lock.locked()


def test_condition_rules(zone):
    c = zone.condition("c")
    with pytest.raises(RuntimeError):
        c.notify()
    with pytest.raises(RuntimeError):
        c.wait(0.01)
    with c:
        with c:                                   # its own lock is an RLock
            assert c.wait(0.01) is False
            assert c.lock.statistics().count == 2  # restored after the wait
        c.notify_all()
    st = c.statistics()
    assert st.lock == "c.lock" and st.waits == 1
    cc = pickle.loads(pickle.dumps(c))
    assert cc.lock._offset == c.lock._offset


def test_condition_notify_n(zone):
    c = zone.condition("c")
    woken = []

    def waiter():
        with c:
            woken.append(c.wait(10))

    ts = [threading.Thread(target=waiter) for _ in range(3)]
    for t in ts:
        t.start()
    wait_until(lambda: c.statistics().waiters == 3)
    time.sleep(0.2)                               # let them reach the kernel (a waiter
    # still on its way there when notify() runs is woken too, which threading allows)
    with c:
        c.notify(2)
    wait_until(lambda: len(woken) >= 2)
    time.sleep(0.05)
    assert len(woken) == 2
    with c:
        c.notify_all()
    for t in ts:
        t.join(10)
    assert woken == [True, True, True]


def test_condition_dead_waiter_does_not_eat_notifications(zone):
    c = zone.condition("c")
    pid = _fork(lambda: (c.acquire(), c.wait(60)))
    wait_until(lambda: c.statistics().waiters >= 1)
    _reap(pid)
    woken = []

    def waiter():
        with c:
            woken.append(c.wait(10))

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: c.statistics().waiters >= 2)
    time.sleep(0.05)
    with c:
        c.notify(1)
    t.join(10)
    assert woken == [True]


# ---- Barrier -----------------------------------------------------------------------------

def _barrier_party(b, rounds, order):
    for r in range(rounds):
        b.wait(30)
        order.inc()


def test_barrier_four_processes(ctx, zone, procs):
    b, order, hits = zone.barrier("b", 4), zone.counter("order"), zone.counter("hits")
    ps = [ctx.Process(target=_barrier_party, args=(b, 5, order)) for _ in range(3)]
    procs.extend(ps)
    for p in ps:
        p.start()
    for r in range(5):
        b.wait(30)
        order.inc()
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert order.get() == 20
    st = b.statistics()
    assert st.passed == 5 and not st.broken and st.parties == 4 and st.n_waiting == 0
    del hits


def test_barrier_indices_and_action(zone):
    ran = []
    b = zone.barrier("b", 3, action=lambda: ran.append(1))
    indices = []
    ts = [threading.Thread(target=lambda: indices.append(b.wait(10))) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert sorted(indices) == [0, 1, 2] and ran == [1]
    with pytest.raises(shmkit.ObjectMismatchError):
        zone.barrier("b", 4)
    assert isinstance(b, Barrier) and b.parties == 3


def test_barrier_timeout_abort_reset(zone):
    b = zone.barrier("b", 2)
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        b.wait(0.1)
    assert 0.1 <= time.monotonic() - t0 < 0.5
    assert b.broken
    with pytest.raises(BrokenBarrierError):
        b.wait(1)
    b.reset()
    assert not b.broken
    errors = []

    def party():
        try:
            b.wait(10)
        except BrokenBarrierError as e:
            errors.append(e)

    t = threading.Thread(target=party)
    t.start()
    wait_until(lambda: b.n_waiting == 1)
    b.abort()
    t.join(10)
    assert len(errors) == 1 and b.broken
    b.reset()
    failing = zone.barrier("f", 1, action=lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.wait()
    assert failing.broken


def test_barrier_breaks_when_a_party_dies(zone):
    b = zone.barrier("b", 3)
    pid = _fork(lambda: b.wait(60))
    wait_until(lambda: b.n_waiting == 1)
    _reap(pid)
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        b.wait(10)
    assert time.monotonic() - t0 < 1.0
    assert b.statistics().breaks == 1


# ---- SIGINT --------------------------------------------------------------------------------

SIGINT_CHILD = r"""
import sys, time, shmkit
z = shmkit.Zone(sys.argv[1])
held = {
    "lock": z.lock("i-lock"), "rlock": z.rlock("i-rlock"), "rw": z.rwlock("i-rw"),
    "sem": z.semaphore("i-sem", 0), "event": z.event("i-event"), "cond": z.condition("i-cond"),
    "barrier": z.barrier("i-barrier", 2),
}
def cond_wait():
    with held["cond"]:
        held["cond"].wait()
ops = {
    "lock": lambda: held["lock"].acquire(),
    "rlock": lambda: held["rlock"].acquire(),
    "rw-read": lambda: held["rw"].acquire_read(),
    "rw-write": lambda: held["rw"].acquire_write(),
    "sem": lambda: held["sem"].acquire(),
    "event": lambda: held["event"].wait(),
    "cond": cond_wait,
    "barrier": lambda: held["barrier"].wait(),
}
for name in sys.argv[2:]:
    sys.stdin.readline()            # the parent has set the stage
    print("WAIT", name, flush=True)
    try:
        ops[name]()
        print("RETURNED", name, flush=True)
    except KeyboardInterrupt:
        print("KI", name, flush=True)
"""


def test_sigint_interrupts_every_blocking_call(zone, name, procs):
    lock, rlock, rw = zone.lock("i-lock"), zone.rlock("i-rlock"), zone.rwlock("i-rw")
    sem, ev, cond = zone.semaphore("i-sem", 0), zone.event("i-event"), zone.condition("i-cond")
    barrier = zone.barrier("i-barrier", 2)
    lock.acquire()
    rlock.acquire()
    stat = {
        "lock": lock.statistics, "rlock": rlock.statistics, "rw-read": rw.statistics,
        "rw-write": rw.statistics, "sem": sem.statistics, "event": ev.statistics,
        "cond": cond.statistics, "barrier": barrier.statistics,
    }
    names = ["lock", "rlock", "rw-write", "sem", "event", "cond", "barrier", "rw-read"]
    p = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, name, *names],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    procs.append(p)
    for op in names:
        if op == "rw-read":
            rw.release_read()    # (held by the fixture for the rw-write case)
            rw.acquire_write()   # readers now wait for this writer
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline().split()
        assert line == ["WAIT", op], (line, p.stderr.read() if p.poll() is not None else "")
        # the rw-write case waits for the read hold the fixture took
        try:
            wait_until(lambda: stat[op]().waiters > 0, 30, what=f"{op} to block")
        except AssertionError:
            p.kill()
            raise AssertionError(f"{op} did not block: {stat[op]()}; child said "
                                 f"{p.stdout.read()!r} {p.stderr.read()!r}") from None
        time.sleep(0.02)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        elapsed = time.monotonic() - t0
        assert line == ["KI", op], line
        assert elapsed < 1.0, f"{op}: KeyboardInterrupt took {elapsed:.3f} s"
        if op == "barrier":
            assert barrier.broken        # an interrupted party does not leave others stuck
    assert p.wait(30) == 0
    rw.release_write()
    rw.acquire_read()            # for the fixture to release


@pytest.fixture(autouse=True)
def _hold_rw_for_writer_test(request, zone):
    """test_sigint: the child's write-lock wait needs a reader in the way."""
    if request.node.name.startswith("test_sigint"):
        rw = zone.rwlock("i-rw")
        rw.acquire_read()
        yield
        try:
            rw.release_read()
        except NotOwnerError:
            pass
    else:
        yield


# ---- corruption ---------------------------------------------------------------------------

def test_corrupted_objects_raise_instead_of_crashing(zone):
    import struct
    rw = zone.rwlock("rw", max_readers=4)
    raw = zone.view(rw._offset, 64)
    struct.pack_into("=I", raw, 36, 1 << 20)          # nslots: far beyond the allocation
    with pytest.raises(shmkit.CorruptedError):
        rw.acquire_read()
    with pytest.raises(shmkit.CorruptedError):
        RWLock("rw", zone=zone)                       # validated again when opened
    struct.pack_into("=I", raw, 36, 4)
    with rw.read_lock():
        pass
    b = zone.barrier("b", 2)
    bview = zone.view(b._offset, 64)
    struct.pack_into("=I", bview, 24, 1000)           # parties
    with pytest.raises(shmkit.CorruptedError):
        b.wait(0.01)
    lock = zone.lock("l")
    lview = zone.view(lock._offset, 16)
    struct.pack_into("=I", lview, 0, 0xdeadbeef)      # magic
    with pytest.raises(shmkit.CorruptedError):
        zone.lock("l")
    for v in (raw, bview, lview):
        v.release()

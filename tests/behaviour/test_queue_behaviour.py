"""Queue behaviour, the same on a local Zone and on a RedisZone (single server, cluster):
the queue.Queue surface, task accounting and the two delivery modes of
docs/design/delivery.md, across real processes."""

from __future__ import annotations

import os
import pickle
import queue as stdlib_queue
import signal
import subprocess
import sys
import time

import pytest

from shmkit import ClosedError, ObjectMismatchError, QueueEmpty, ShmkitTimeoutError


# -- children (spawned) ------------------------------------------------------------------

def _produce(zone, name, producer, n):
    q = zone.queue(name)
    for i in range(n):
        q.put(f"{producer}:{i}".encode())


def _take_one_and_hang(zone, name, taken):
    q = zone.queue(name)
    q.get(timeout=30)
    taken.set()
    time.sleep(120)          # killed here: between get() and task_done()


def _consume_slowly(zone, name, n, delay):
    q = zone.queue(name)
    for _ in range(n):
        q.get(timeout=30)
        time.sleep(delay)
        q.task_done()


def run_blocked_child(zone, code: str):
    """A plain subprocess that unpickles ``zone`` as ``zone``, prints "ready", then runs
    ``code``; returns the Popen."""
    prog = ("import pickle, sys\n"
            "zone = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "print('ready', flush=True)\n"
            "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
            "except KeyboardInterrupt:\n"
            "    print('KeyboardInterrupt', flush=True)\n"
            "    sys.exit(7)\n")
    return subprocess.Popen([sys.executable, "-c", prog, pickle.dumps(zone).hex()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_and_collect(p, settle: float = 0.5):
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(settle)
        assert p.poll() is None, p.communicate()
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        return time.monotonic() - t0, p.returncode, out, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


# -- the queue.Queue surface, both backends ------------------------------------------------

def test_put_get_fifo_and_batches(backend):
    q = backend.zone().queue("jobs")
    q.put(b"a")
    q.put_nowait(bytearray(b"b"))
    assert q.put_many([b"c", b"d", b"e"]) == 3
    assert q.qsize() == 5 and not q.empty()
    assert q.get() == b"a"
    assert q.get_nowait() == b"b"
    assert q.get_many(2) == [b"c", b"d"]
    assert q.get(timeout=1) == b"e"
    assert q.empty()


def test_get_times_out_with_queue_empty(backend):
    q = backend.zone().queue("jobs")
    with pytest.raises(QueueEmpty):
        q.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3


def test_objects_mode(backend):
    q = backend.zone().queue("objs", mode="objects")
    q.put({"a": [1, 2.5, "x"]})
    q.put_many([(1, 2), None])
    assert q.get() == {"a": [1, 2.5, "x"]}
    assert q.get_many(10) == [(1, 2), None]


def test_mode_is_recorded_and_the_other_mode_refused(backend):
    """issue 13 #11: a bytes queue reopened in objects mode (or the reverse) is refused,
    naming both modes; no mode takes the recorded one."""
    z = backend.zone()
    z.queue("raw").put(b"raw bytes")
    with pytest.raises(ObjectMismatchError, match="mode bytes.*mode objects"):
        z.queue("raw", mode="objects")
    assert z.queue("raw").mode == "bytes"
    z.queue("objs", mode="objects").put({"a": 1})
    with pytest.raises(ObjectMismatchError, match="mode objects.*mode bytes"):
        z.queue("objs", mode="bytes")
    again = z.queue("objs")
    assert again.mode == "objects"
    assert again.get(timeout=5) == {"a": 1}


def test_close_refuses_puts_and_drains(backend):
    q = backend.zone().queue("jobs")
    q.put(b"last")
    q.close()
    assert q.closed
    with pytest.raises(ClosedError):
        q.put(b"more")
    assert q.get(timeout=1) == b"last"
    with pytest.raises(ClosedError):
        q.get(timeout=1)
    q.reopen()
    q.put(b"again")
    assert q.get() == b"again"


def test_blocking_get_wakes_on_a_put_from_another_process(backend, spawn):
    zone = backend.zone()
    q = zone.queue("jobs")
    p = spawn(_produce, zone, "jobs", "p", 1)
    t0 = time.monotonic()
    assert q.get(timeout=30) == b"p:0"
    assert time.monotonic() - t0 < 30
    p.join(30)
    assert p.exitcode == 0


def test_per_producer_order_across_processes(backend, spawn):
    zone = backend.zone()
    q = zone.queue("jobs", 1 << 20) if backend.kind == "local" else zone.queue("jobs")
    n = 300
    procs = [spawn(_produce, zone, "jobs", f"p{i}", n) for i in range(2)]
    seen = {"p0": -1, "p1": -1}
    for _ in range(2 * n):
        producer, i = q.get(timeout=30).decode().split(":")
        assert int(i) == seen[producer] + 1, "a producer's messages came out of order"
        seen[producer] = int(i)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert seen == {"p0": n - 1, "p1": n - 1}


def test_get_interrupted_by_ctrl_c(backend):
    zone = backend.zone()
    zone.queue("jobs")
    p = run_blocked_child(zone, "zone.queue('jobs').get()")
    took, rc, out, err = interrupt_and_collect(p)
    assert rc == 7, (out, err)
    assert took < 5


# -- task accounting and delivery (issue 18 for the local queue) ---------------------------------

def test_task_done_and_join(queue_backend):
    q = queue_backend.zone().queue("jobs")
    assert q.maxsize == 0
    assert q.delivery == "at-most-once"
    q.put_many([b"1", b"2", b"3"])
    assert q.unfinished_tasks == 3
    q.get()
    q.task_done()
    assert q.unfinished_tasks == 2
    q.get_many(2)
    q.task_done(2)
    assert q.unfinished_tasks == 0
    q.join(timeout=5)
    s = q.statistics()
    assert (s.unfinished_tasks, s.in_flight, s.acknowledged) == (0, 0, 3)


def test_task_done_too_many_times(queue_backend):
    q = queue_backend.zone().queue("jobs")
    with pytest.raises(ValueError):
        q.task_done()
    q.put(b"x")
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


def test_join_times_out(queue_backend):
    q = queue_backend.zone().queue("jobs")
    q.put(b"pending")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as exc:
        q.join(timeout=0.3)
    assert isinstance(exc.value, ShmkitTimeoutError)
    assert 0.25 <= time.monotonic() - t0 < 3


def test_join_wakes_when_another_process_finishes(queue_backend, spawn):
    zone = queue_backend.zone()
    q = zone.queue("jobs")
    q.put_many([b"1", b"2"])
    p = spawn(_consume_slowly, zone, "jobs", 2, 0.2)
    t0 = time.monotonic()
    q.join(timeout=30)
    assert time.monotonic() - t0 < 15
    p.join(30)
    assert p.exitcode == 0 and q.unfinished_tasks == 0


def test_join_interrupted_by_ctrl_c(queue_backend):
    zone = queue_backend.zone()
    zone.queue("jobs").put(b"never done")
    p = run_blocked_child(zone, "zone.queue('jobs').join()")
    took, rc, out, err = interrupt_and_collect(p)
    assert rc == 7, (out, err)
    assert took < 5


def test_delivery_option(queue_backend):
    zone = queue_backend.zone()
    q = zone.queue("a", delivery="at-least-once")
    assert q.delivery == "at-least-once"
    assert zone.queue("a").delivery == "at-least-once"        # None takes what exists
    with pytest.raises(ObjectMismatchError, match="at-least-once"):
        zone.queue("a", delivery="at-most-once")
    with pytest.raises(ValueError, match="at-most-once"):
        zone.queue("b", delivery="exactly-once")
    assert zone.queue("c", max_messages=4).maxsize == 4


def test_consumer_killed_before_task_done_at_least_once(queue_backend, spawn):
    zone = queue_backend.zone()
    q = zone.queue("jobs", delivery="at-least-once")
    q.put_many([b"m1", b"m2"])
    taken = spawn.ctx.Event()
    p = spawn(_take_one_and_hang, zone, "jobs", taken)
    assert taken.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    grace = queue_backend.death_grace
    got = sorted([q.get(timeout=grace), q.get(timeout=grace)])
    assert got == [b"m1", b"m2"]          # the dead consumer's message came back
    q.task_done(2)
    q.join(timeout=5)
    s = q.statistics()
    assert s.redeliveries == 1
    assert (s.unfinished_tasks, s.in_flight) == (0, 0)


def test_consumer_killed_before_task_done_at_most_once(queue_backend, spawn):
    zone = queue_backend.zone()
    q = zone.queue("jobs", delivery="at-most-once")
    q.put_many([b"m1", b"m2"])
    taken = spawn.ctx.Event()
    p = spawn(_take_one_and_hang, zone, "jobs", taken)
    assert taken.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert q.get(timeout=5) == b"m2"
    q.task_done()
    q.join(timeout=queue_backend.death_grace)   # the dead consumer's task is released
    s = q.statistics()
    assert s.abandoned_tasks == 1 and s.unfinished_tasks == 0
    with pytest.raises(QueueEmpty):
        q.get(timeout=0.3)                       # its message went with it

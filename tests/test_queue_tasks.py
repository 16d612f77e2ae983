"""shmkit.Queue's task accounting and delivery modes (issue 18, docs/queue.md): the
queue.Queue / multiprocessing.JoinableQueue surface, task_done()/join() across processes,
and what happens to a consumer's tasks when it dies between get() and task_done():
released (at-most-once) or delivered again (at-least-once), with real SIGKILLs, some of
them inside the core's own steps (the _debug_die hooks).

The campaigns (a producer and 4 workers SIGKILLed at random points and restarted) run
~3,000 messages here; SHMKIT_TASK_CAMPAIGN=N runs N instead (a longer campaign:
``SHMKIT_TASK_CAMPAIGN=100000 .venv/bin/python -m pytest tests/test_queue_tasks.py -k
campaign``)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as stdlib_queue
import random
import signal
import struct
import threading
import time

import pytest

from shmkit import (ClosedError, InvalidArgumentError, ObjectMismatchError, Queue,
                    QueueEmpty, ShmkitTimeoutError, _core)

FORK = mp.get_context("fork")
CAMPAIGN = int(os.environ.get("SHMKIT_TASK_CAMPAIGN", "3000"))


# -- the stdlib surface -------------------------------------------------------------------

def test_stdlib_surface_both_modes(zone):
    for delivery in ("at-most-once", "at-least-once"):
        q = Queue(f"q-{delivery}", 1 << 16, zone=zone, max_messages=50, delivery=delivery)
        assert q.maxsize == 50 and q.delivery == delivery
        assert q.unfinished_tasks == 0
        q.join(timeout=0)                     # nothing put: returns at once
        q.put(b"a")
        q.put_nowait(b"b")
        assert q.put_many([b"c", b"d"]) == 2
        assert q.unfinished_tasks == 4 and q.qsize() == 4
        assert q.get() == b"a" and q.get_nowait() == b"b"
        assert q.outstanding_tasks == 2 and q.unfinished_tasks == 4
        q.task_done()
        assert q.unfinished_tasks == 3 and q.outstanding_tasks == 1
        assert q.get_many(5) == [b"c", b"d"]
        with pytest.raises(ValueError, match="too many"):
            q.task_done(4)                    # holds 3: nothing is marked then
        assert q.outstanding_tasks == 3
        q.task_done(3)
        q.join()
        s = q.statistics()
        assert (s.unfinished_tasks, s.in_flight, s.acknowledged, s.delivery) == (0, 0, 4, delivery)
        assert (s.redeliveries, s.abandoned_tasks) == (0, 0)
        with pytest.raises(ValueError, match="too many"):
            q.task_done()
        with pytest.raises(ValueError):
            q.task_done(0)
        q.join_thread()
        q.cancel_join_thread()
    assert Queue("bytes-only", zone=zone).maxsize == 0


def test_delivery_is_recorded_and_checked(zone):
    q = Queue("d", zone=zone, delivery="at-least-once")
    assert Queue("d", zone=zone).delivery == "at-least-once"
    with pytest.raises(ObjectMismatchError, match="at-least-once.*at-most-once"):
        Queue("d", zone=zone, delivery="at-most-once")
    with pytest.raises(ValueError, match="at-most-once"):
        Queue("e", zone=zone, delivery="exactly-once")
    assert Queue("f", zone=zone).delivery == "at-most-once"
    with pytest.raises(ObjectMismatchError):
        Queue("f", zone=zone, delivery="at-least-once")
    with pytest.raises(InvalidArgumentError, match="at-least-once"):
        q.reserve(100)                        # zero-copy: not with redelivery
    assert pickle_roundtrip(q).delivery == "at-least-once"


def pickle_roundtrip(q):
    import pickle
    return pickle.loads(pickle.dumps(q))


def _stdlib_style_worker_pool(q, n_threads, results):
    """Code written for queue.Queue: a pool of threads, task_done() per item, join()."""
    def worker():
        while True:
            item = q.get()
            if item is None:
                q.task_done()
                break
            results.append(item["x"] * 2)
            q.task_done()
    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for i in range(200):
        q.put({"x": i})
    q.join()
    for _ in threads:
        q.put(None)
    q.join()
    for t in threads:
        t.join()


@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once"])
def test_code_written_for_queue_Queue_runs_unchanged(zone, delivery):
    results = []
    _stdlib_style_worker_pool(Queue("objs", zone=zone, mode="objects", delivery=delivery),
                              4, results)
    assert sorted(results) == [2 * i for i in range(200)]
    ref = []
    _stdlib_style_worker_pool(stdlib_queue.Queue(), 4, ref)
    assert sorted(ref) == sorted(results)


def test_join_wakes_on_task_done_in_another_process(zone, procs):
    q = Queue("j", zone=zone, delivery="at-least-once")
    q.put_many([b"1", b"2", b"3"])

    def slow_consumer():
        c = Queue("j", zone=zone)
        for _ in range(3):
            c.get(timeout=10)
            time.sleep(0.15)
            c.task_done()
        os._exit(0)

    p = FORK.Process(target=slow_consumer)
    procs.append(p)
    p.start()
    t0 = time.monotonic()
    q.join(timeout=20)
    took = time.monotonic() - t0
    assert 0.3 < took < 5
    p.join(10)
    assert p.exitcode == 0


def test_join_timeout_and_detach_while_joining(zone):
    q = Queue("j", zone=zone)
    q.put(b"x")
    t0 = time.monotonic()
    with pytest.raises(ShmkitTimeoutError, match="1 task"):
        q.join(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 3
    with pytest.raises(ShmkitTimeoutError):
        q.join(timeout=0)
    other = Queue("j", zone=zone)
    errors = []

    def joiner():
        try:
            other.join(timeout=20)
        except ClosedError as e:
            errors.append(e)
    t = threading.Thread(target=joiner)
    t.start()
    time.sleep(0.2)
    other.detach()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1


# -- a handle that goes away holding tasks ---------------------------------------------------

def test_detach_at_most_once_releases_tasks(zone):
    q = Queue("q", zone=zone)
    q.put_many([b"1", b"2", b"3"])
    c = Queue("q", zone=zone)
    assert c.get_many(2) == [b"1", b"2"]
    c.task_done()
    c.detach()                                # one outstanding: released
    s = q.statistics()
    assert (s.abandoned_tasks, s.unfinished_tasks, s.acknowledged) == (1, 1, 1)
    q.get()
    q.task_done()
    q.join(timeout=1)


def test_detach_at_least_once_gives_back_at_once(zone):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put_many([b"1", b"2", b"3"])
    c = Queue("q", zone=zone)
    assert c.get_many(2) == [b"1", b"2"]
    c.task_done()                             # "1" acknowledged
    assert q.statistics().in_flight == 1
    c.detach()                                # "2" deliverable again, now
    assert sorted(q.get_many(10)) == [b"2", b"3"]
    s = q.statistics()
    assert (s.redeliveries, s.in_flight, s.unfinished_tasks) == (1, 2, 2)
    q.task_done(2)
    q.join(timeout=1)
    assert q.statistics().acknowledged == 3


def test_in_flight_messages_keep_their_space(zone):
    q = Queue("q", 4096, zone=zone, delivery="at-least-once")
    msg = b"x" * 1000
    while True:
        try:
            q.put(msg, timeout=0)
        except stdlib_queue.Full:
            break
    n = q.qsize()
    assert n >= 3
    assert len(q.get_many(100)) == n          # all taken, none acknowledged
    with pytest.raises(stdlib_queue.Full):
        q.put(msg, timeout=0.1)               # they still hold the ring
    q.task_done()                             # the oldest acknowledged: its space is back
    q.put(msg, timeout=1)
    q.task_done(n - 1)
    assert q.get() == msg
    q.task_done()
    q.join(timeout=1)


def test_fork_child_holds_none_of_the_parents_tasks(zone):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put_many([b"1", b"2"])
    assert q.get() == b"1"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            try:
                q.task_done()
                code = 1
            except ValueError:
                code = 0 if q.get() == b"2" else 2
            q.task_done()
            os.write(w, b"%d" % code)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 8) == b"0"
    os.close(r)
    os.waitpid(pid, 0)
    q.task_done()                              # the parent's own task
    q.join(timeout=2)


def test_closed_queue_drains_then_refuses_at_least_once(zone):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put(b"last")
    q.close()
    assert q.get(timeout=1) == b"last"
    with pytest.raises(ClosedError):
        q.get(timeout=1)
    q.task_done()
    q.join(timeout=1)


# -- consumers killed between get() and task_done() ------------------------------------------

def _take_and_die(zone, name, n, hook):
    q = Queue(name, zone=zone)
    if hook:
        q._debug_die(hook)                    # SIGKILL inside the core's step
    q.get_many(n, timeout=10)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("hook", [0, _core.QDIE_ACK_TAKEN])
def test_killed_consumer_at_least_once(zone, procs, hook):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put_many([b"%d" % i for i in range(5)])
    p = FORK.Process(target=_take_and_die, args=(zone, "q", 3 if not hook else 1, hook))
    procs.append(p)
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    lost = 3 if not hook else 1
    got = []
    while len(got) < 5:
        got += q.get_many(10, timeout=2)
    assert sorted(got) == [b"%d" % i for i in range(5)]
    s = q.statistics()
    assert s.redeliveries == lost and s.in_flight == 5
    q.task_done(5)
    q.join(timeout=2)


def test_killed_consumer_at_most_once(zone, procs):
    q = Queue("q", zone=zone)
    q.put_many([b"%d" % i for i in range(5)])
    p = FORK.Process(target=_take_and_die, args=(zone, "q", 3, 0))
    procs.append(p)
    p.start()
    p.join(10)
    assert q.get_many(10) == [b"3", b"4"]
    q.task_done(2)
    q.join(timeout=5)                         # the dead consumer's three tasks released
    s = q.statistics()
    assert (s.abandoned_tasks, s.unfinished_tasks, s.redeliveries) == (3, 0, 0)


def _ack_some_then_die(zone, name):
    q = Queue(name, zone=zone)
    q.get_many(3, timeout=10)
    q._debug_die(_core.QDIE_ACK_DONE)        # killed right after the first acknowledgement
    q.task_done(3)
    os._exit(3)


def test_killed_inside_task_done(zone, procs):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put_many([b"a", b"b", b"c"])
    p = FORK.Process(target=_ack_some_then_die, args=(zone, "q"))
    procs.append(p)
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    assert sorted(q.get_many(10, timeout=2)) == [b"b", b"c"]   # "a" was acknowledged
    q.task_done(2)
    q.join(timeout=2)
    assert q.statistics().redeliveries == 2


def _hold_then_repair_and_die(zone, name, ready):
    q = Queue(name, zone=zone)
    q._debug_die(_core.QDIE_REDELIVER)
    ready.set()
    while True:                               # repair until the hook fires
        q.repair()
        time.sleep(0.005)


def test_repairer_killed_while_giving_back(zone, procs):
    q = Queue("q", zone=zone, delivery="at-least-once")
    q.put_many([b"a", b"b"])
    holder = FORK.Process(target=_take_and_die, args=(zone, "q", 2, 0))
    procs.append(holder)
    ready = FORK.Event()
    repairer = FORK.Process(target=_hold_then_repair_and_die, args=(zone, "q", ready))
    procs.append(repairer)
    holder.start()
    holder.join(10)
    repairer.start()
    repairer.join(10)
    assert repairer.exitcode == -signal.SIGKILL
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        try:
            got += q.get_many(10, timeout=0.5)
        except QueueEmpty:
            pass
    assert sorted(got) == [b"a", b"b"]
    q.task_done(2)
    q.join(timeout=2)


# -- the campaign: a producer and 4 workers killed at random points ---------------------------

def _campaign_producer(zone, n):
    q = Queue("jobs", zone=zone)
    for i in range(0, n, 50):
        q.put_many([struct.pack("<I", j) for j in range(i, min(n, i + 50))])
    os._exit(0)


def _campaign_worker(zone, log_path, seed, kill_rate, in_core):
    rnd = random.Random(seed)
    q = Queue("jobs", zone=zone)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            if in_core and rnd.random() < kill_rate / 4:
                os.write(fd, b"G\n")          # armed: killed inside the core's take
                q._debug_die(_core.QDIE_ACK_TAKEN)
                try:
                    q.get(timeout=5)
                except (QueueEmpty, ClosedError):
                    pass
                os.write(fd, b"N\n")          # the hook did not fire (nothing came)
                q._debug_die(0)
                continue
            try:
                m = q.get(timeout=5)
            except QueueEmpty:
                continue
            except ClosedError:
                break
            (i,) = struct.unpack("<I", m)
            r = rnd.random()
            if r < kill_rate / 2:             # killed before the work
                os.write(fd, b"K %d\n" % i)
                os.kill(os.getpid(), signal.SIGKILL)
            os.write(fd, b"D %d\n" % i)       # the work: recorded
            if in_core and r < kill_rate:     # killed after the work, before task_done
                os.write(fd, b"K %d\n" % i)
                time.sleep(rnd.random() * 0.002)
                os.kill(os.getpid(), signal.SIGKILL)
            q.task_done()
    finally:
        os.close(fd)
    os._exit(0)


def _run_campaign(zone, tmp_path, procs, delivery, n):
    Queue("jobs", 1 << 16, zone=zone, delivery=delivery)   # 64 KiB: the ring wraps often
    q = Queue("jobs", zone=zone)
    log = tmp_path / "log"
    log.write_bytes(b"")
    ack = delivery == "at-least-once"
    producer = FORK.Process(target=_campaign_producer, args=(zone, n))
    procs.append(producer)
    producer.start()
    workers = []
    seed = 0
    deadline = time.monotonic() + 60 + n / 200
    joined = False
    while time.monotonic() < deadline:
        workers = [w for w in workers if w.is_alive()]   # (is_alive reaps the dead)
        while len(workers) < 4:
            seed += 1
            w = FORK.Process(target=_campaign_worker,
                             args=(zone, str(log), seed, 0.03, ack))
            procs.append(w)
            w.start()
            workers.append(w)
        producer.join(0)
        if producer.exitcode is None:
            time.sleep(0.02)
            continue
        try:
            q.join(timeout=0.2)
            joined = True
            break
        except ShmkitTimeoutError:
            pass
    assert joined, f"join() did not return: {q.statistics()}"
    assert producer.exitcode == 0
    q.close()
    for w in workers:
        w.join(10)
    lines = log.read_bytes().split(b"\n")
    done = {int(x[2:]) for x in lines if x.startswith(b"D ")}
    killed = [int(x[2:]) for x in lines if x.startswith(b"K ")]
    in_core = lines.count(b"G") - lines.count(b"N")
    s = q.statistics()
    return s, done, killed, in_core


def test_campaign_at_least_once(zone, tmp_path, procs):
    n = CAMPAIGN
    s, done, killed, in_core = _run_campaign(zone, tmp_path, procs, "at-least-once", n)
    assert done == set(range(n)), "a message was lost"        # every one processed
    assert len(killed) + in_core > 0
    assert s.redeliveries == len(killed) + in_core            # each kill held one message
    assert (s.unfinished_tasks, s.in_flight, s.acknowledged) == (0, 0, n)
    assert s.puts == n and s.dropped_puts == 0


def test_campaign_at_most_once(zone, tmp_path, procs):
    n = CAMPAIGN
    s, done, killed, _ = _run_campaign(zone, tmp_path, procs, "at-most-once", n)
    assert killed, "no kill happened"
    assert done.isdisjoint(killed) and done | set(killed) == set(range(n))
    assert s.abandoned_tasks == len(killed)                   # released, join returned
    assert (s.unfinished_tasks, s.in_flight, s.redeliveries) == (0, 0, 0)
    assert s.acknowledged == n - len(killed)


# -- asyncio: await q.aio.join() ----------------------------------------------------------------

@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once"])
def test_aio_join(zone, procs, delivery):
    import asyncio

    q = Queue("q", zone=zone, delivery=delivery)
    q.put_many([b"1", b"2"])

    def consumer():
        c = Queue("q", zone=zone)
        for _ in range(2):
            c.get(timeout=10)
            time.sleep(0.1)
            c.task_done()
        os._exit(0)

    async def main():
        with pytest.raises(ShmkitTimeoutError):
            await q.aio.join(timeout=0.05)
        p = FORK.Process(target=consumer)
        procs.append(p)
        p.start()
        ticks = 0

        async def ticker():                   # the loop stays free while joining
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        t = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        await q.aio.join(timeout=20)
        took = time.monotonic() - t0
        t.cancel()
        assert 0.15 < took < 10 and ticks >= 5
        # a cancelled join changes nothing
        q.put(b"3")
        j = asyncio.ensure_future(q.aio.join())
        await asyncio.sleep(0.05)
        j.cancel()
        with pytest.raises(asyncio.CancelledError):
            await j
        assert q.get() == b"3"
        q.task_done()
        await q.aio.join(timeout=1)
        p.join(10)
        assert p.exitcode == 0

    asyncio.run(main())

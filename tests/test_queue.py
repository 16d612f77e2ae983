"""shmkit.Queue: the queue.Queue surface, batching, close, modes, zero-copy hand-off,
real processes (spawn, forkserver, fork), Ctrl-C, and 2 producers x 2 consumers."""

from __future__ import annotations

import json
import os
import pickle
import queue as stdqueue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

import shmkit
from shmkit import (ClosedError, ObjectExistsError, ObjectNotFoundError, Queue, QueueEmpty,
                    QueueFull, TooLargeError, ZoneMismatchError)

from conftest import unique, wait_until

np = pytest.importorskip("numpy")


def test_round_trip_of_bytes_like_objects(zone):
    q = Queue("q", 4096, zone=zone)
    for item in (b"", b"hello", bytearray(b"ba"), memoryview(b"mv"), np.arange(3, dtype=np.uint8),
                 bytes(3000)):
        q.put(item)
    assert q.qsize() == 6
    assert [q.get() for _ in range(6)] == [b"", b"hello", b"ba", b"mv", b"\x00\x01\x02", bytes(3000)]
    assert q.empty()


def test_bytes_mode_rejects_other_objects(zone):
    q = Queue("q", zone=zone)
    with pytest.raises(TypeError, match="bytes-like"):
        q.put("text")
    with pytest.raises(TypeError):
        q.put_many([b"a", 3])
    assert q.qsize() == 0


def test_get_view_returns_a_private_buffer(zone):
    q = Queue("q", zone=zone)
    q.put(b"abc")
    q.put(b"def")
    v1 = q.get(view=True)
    v2 = q.get(timeout=1, view=True)
    assert isinstance(v1, memoryview) and bytes(v1) == b"abc" and bytes(v2) == b"def"
    v1[0] = ord("x")  # writable, and not shared with anything else
    assert bytes(v2) == b"def"


def test_gets_around_a_zero_copy_message(zone):
    """Small messages are copied out before they are taken (one CAS takes them and gives
    the space back); a zero-copy block's REF record is taken the other way (claim first)
    and given back before get returns.  Mixed, everything comes out once, in order, with
    the space given back.  (Gets while another consumer holds a claim-first range, and
    ranges given back out of order, are tested in tests/c/test_queue.c, where a range can
    be held.)"""
    q = Queue("q", 4096, zone=zone)
    q2 = Queue("q", zone=zone)
    r = q.reserve(1000)
    r.commit()
    for i in range(20):
        q.put(b"%d" % i)
    held = q2.get()  # the REF record: taken claim first, accepted, given back
    assert isinstance(held, memoryview) and len(held) == 1000
    got = [q.get() for _ in range(5)] + q.get_many(3) + [bytes(q2.get(view=True))]
    got += q2.get_many(100)
    assert got == [b"%d" % i for i in range(20)]
    del held
    st = q.statistics()
    assert (st.depth, st.bytes_used, st.drops, st.reservations) == (0, 0, 0, 0)
    assert st.puts == st.gets == 21
    # the ring wraps many times with messages of every small size, in both ways
    for i in range(3000):
        m = bytes([i % 251]) * (i % 700)
        q.put(m)
        assert (q.get() if i % 3 else q.get_many(5)[0]) == m
    assert q.statistics().bytes_used == 0


def test_empty_and_full_are_the_standard_library_exceptions(zone):
    q = Queue("q", 4096, zone=zone)
    with pytest.raises(stdqueue.Empty):
        q.get_nowait()
    with pytest.raises(QueueEmpty):
        q.get(block=False)
    n = 0
    while True:
        try:
            q.put_nowait(b"12345678")
            n += 1
        except stdqueue.Full:
            break
    assert n == 4096 // 32
    assert q.full()
    with pytest.raises(QueueFull):
        q.put(b"x", block=False)
    assert q.get() == b"12345678"
    assert not q.full()


def test_timeouts_are_honoured(zone):
    q = Queue("q", 4096, zone=zone)
    t = time.monotonic()
    with pytest.raises(QueueEmpty):
        q.get(timeout=0.2)
    assert 0.19 <= time.monotonic() - t < 5
    while not q.full():
        q.put(b"x" * 100)
    t = time.monotonic()
    with pytest.raises(QueueFull):
        q.put(b"x" * 100, timeout=0.2)
    assert 0.19 <= time.monotonic() - t < 5
    t = time.monotonic()
    with pytest.raises(QueueFull):
        q.put(b"x" * 100, True, 0)
    assert time.monotonic() - t < 1
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(TypeError):
        q.get(timeout="soon")


def test_blocked_get_releases_the_gil(zone):
    q = Queue("q", zone=zone)
    got = []
    th = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    th.start()
    time.sleep(0.05)  # the getter is blocked; this thread still runs Python
    q.put(b"wake")
    th.join(10)
    assert got == [b"wake"]
    assert q.statistics().waits >= 1


def test_put_many_and_get_many(zone):
    q = Queue("q", 4096, zone=zone)
    assert q.put_many([b"%d" % i for i in range(50)]) == 50
    assert q.get_many(10) == [b"%d" % i for i in range(10)]
    # max_bytes stops before the payload total would exceed it (the first always comes)
    assert q.get_many(max_bytes=3) == [b"10"]
    assert q.get_many(100, max_bytes=5) == [b"11", b"12"]
    assert q.get_many(max_messages=1000) == [b"%d" % i for i in range(13, 50)]
    assert q.get_many(block=False) == []
    with pytest.raises(QueueEmpty):
        q.get_many(timeout=0.05)
    # non-blocking: puts what fits; QueueFull when nothing does
    n = q.put_many([bytes(100)] * 100, block=False)
    assert 0 < n < 100
    with pytest.raises(QueueFull):
        q.put_many([bytes(100)], block=False)
    with pytest.raises(QueueFull, match="timed out after putting 0 of 1"):
        q.put_many([bytes(100)], timeout=0.05)
    assert len(q.get_many(1000)) == n
    with pytest.raises(ValueError):
        q.get_many(0)


def test_oversize_messages_fail_at_once(zone):
    q = Queue("q", 4096, zone=zone)
    assert q.capacity == 4096 and q.max_message_size == 4080
    q.put(bytes(4080))
    t = time.monotonic()
    for call in (lambda: q.put(bytes(4081)), lambda: q.put(bytes(1 << 20), timeout=None),
                 lambda: q.put_many([b"ok", bytes(5000)])):
        with pytest.raises(TooLargeError, match="can never fit"):
            call()
    assert time.monotonic() - t < 2  # no waiting for space that can never come
    assert isinstance(TooLargeError("x"), ValueError)
    o = Queue("o", 4096, zone=zone, mode="objects")
    with pytest.raises(TooLargeError):
        o.put(np.zeros(1000))


def test_capacity_identity_and_attach_modes(zone):
    q = Queue("q", 5000, zone=zone)
    assert q.capacity == 8192  # rounded up to a power of two
    assert Queue("q", zone=zone).capacity == 8192
    assert Queue("q", 8192, zone=zone).capacity == 8192
    with pytest.raises(ZoneMismatchError, match="capacity 8192"):
        Queue("q", 1 << 20, zone=zone)
    with pytest.raises(ObjectExistsError):
        Queue("q", zone=zone, exclusive=True)
    with pytest.raises(ObjectNotFoundError):
        Queue("missing", zone=zone, create=False)
    with pytest.raises(ValueError):
        Queue("bad", 0, zone=zone)
    with pytest.raises(ValueError):
        Queue("bad", zone=zone, mode="json")
    with pytest.raises(shmkit.InvalidNameError):
        Queue("", zone=zone)
    with pytest.raises(TypeError):
        Queue("x", zone="not a zone")


def test_max_messages(zone):
    q = Queue("q", 65536, zone=zone, max_messages=3)
    for i in range(3):
        q.put(b"%d" % i)
    assert q.full()
    with pytest.raises(QueueFull):
        q.put_nowait(b"x")
    with pytest.raises(QueueFull):
        q.put_many([b"a", b"b"], block=False)
    assert q.get() == b"0"
    assert q.put_many([b"a", b"b"], block=False) == 1
    assert q.qsize() == 3
    with pytest.raises(ZoneMismatchError):
        Queue("q", zone=zone, max_messages=4)


def test_close_drains_then_fails(zone):
    q = Queue("q", zone=zone)
    q.put(b"1")
    q.put(b"2")
    q.close()
    assert q.closed
    with pytest.raises(ClosedError, match="closed"):
        q.put(b"3")
    with pytest.raises(ClosedError):
        q.put_many([b"3"])
    assert q.get() == b"1"
    assert q.get_many() == [b"2"]
    with pytest.raises(ClosedError, match="closed and empty"):
        q.get()
    with pytest.raises(ClosedError):
        q.get_nowait()
    q.reopen()
    q.put(b"4")
    assert q.get() == b"4"


def test_close_wakes_blocked_getters_and_putters(zone):
    q = Queue("q", 4096, zone=zone)
    other = Queue("q", zone=zone)  # a second handle, as another process would have
    errors = []

    def getter():
        try:
            q.get(timeout=10)
        except ClosedError as e:
            errors.append(e)

    th = threading.Thread(target=getter)
    th.start()
    time.sleep(0.05)
    other.close()
    th.join(5)
    assert not th.is_alive() and len(errors) == 1
    other.reopen()
    while not q.full():
        q.put(bytes(100))

    def putter():
        try:
            q.put(bytes(100), timeout=10)
        except ClosedError as e:
            errors.append(e)

    th = threading.Thread(target=putter)
    th.start()
    time.sleep(0.05)
    other.close()
    th.join(5)
    assert not th.is_alive() and len(errors) == 2


def test_detach_while_another_thread_waits(zone):
    q = Queue("q", zone=zone)
    other = Queue("q", zone=zone)
    assert q.statistics().members == 2
    results = []

    def waiter():
        t0 = time.monotonic()
        try:
            q.get(timeout=30)
        except Exception as e:
            results.append((type(e), time.monotonic() - t0))

    th = threading.Thread(target=waiter)
    th.start()
    wait_until(lambda: other.statistics().waits >= 1, what="the get to sleep")
    q.detach()              # the waiting get ends at once ...
    th.join(10)
    assert results and results[0][0] is ClosedError and results[0][1] < 5
    assert q.detached       # ... and, having left, gave the member slot back
    assert other.statistics().members == 1
    other.put(b"still works")
    assert other.get() == b"still works"


def test_a_claim_without_its_header_holds_puts_up_until_their_timeout(zone):
    # a live process's claim without its header holds puts up: puts wait (asleep), and
    # end at their timeout
    q = Queue("q", 4096, zone=zone)
    buf = zone.segment.buf
    off = zone.find("q").offset
    tail = struct.unpack_from("<Q", buf, off + 64)[0]
    me = 1  # another live member slot: this process's second handle
    other = Queue("q", zone=zone)
    struct.pack_into("<QQ", buf, off + 512 + 128 * me + 16, tail, 32)   # its claim (pos, size)
    struct.pack_into("<Q", buf, off + 72, (me + 1) << 48)               # the tail names it
    struct.pack_into("<Q", buf, off + 64, tail + 32)
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        q.put(b"x", timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    other.detach()


def test_objects_mode(zone):
    q = Queue("o", 1 << 20, zone=zone, mode="objects")
    items = [None, 1, "text", {"a": [1, 2.5, b"x"]}, (1, "two"), set(range(5))]
    for it in items:
        q.put(it)
    assert [q.get() for _ in items] == items
    q.put_many(items)
    assert q.get_many() == items
    assert q.mode == "objects" and isinstance(q, Queue)


def test_objects_mode_sends_numpy_out_of_band(zone):
    q = Queue("o", 1 << 20, zone=zone, mode="objects")
    a = np.arange(100_000, dtype=np.float64)
    b = np.arange(12, dtype=np.int32).reshape(3, 4)
    q.put({"a": a, "b": b, "meta": "x"})
    st = q.statistics()
    # the pickle itself is tiny: the arrays travelled as out-of-band parts
    assert a.nbytes < st.bytes_used < a.nbytes + b.nbytes + 1024
    got = q.get()
    assert got["meta"] == "x"
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    assert got["a"].flags.writeable
    got["a"][0] = -1  # a private copy: the sender's array is untouched
    assert a[0] == 0
    # a non-contiguous array cannot go out of band: it is pickled in-band instead
    q.put(a[::2])
    np.testing.assert_array_equal(q.get(), a[::2])


def test_objects_mode_with_a_custom_serializer(zone):
    q = Queue("j", zone=zone, mode="objects", serializer=(lambda o: json.dumps(o).encode(),
                                                         json.loads))
    q.put({"k": [1, 2]})
    assert q.get() == {"k": [1, 2]}
    q2 = Queue("p", zone=zone, mode="objects", serializer=pickle)
    q2.put((1, 2))
    assert q2.get() == (1, 2)
    with pytest.raises(TypeError, match="dumps"):
        Queue("x", zone=zone, mode="objects", serializer=42)
    with pytest.raises(ValueError, match="objects"):
        Queue("x", zone=zone, serializer=pickle)


def test_reserve_commit_hands_over_the_same_memory(zone):
    q = Queue("zc", zone=zone)
    free0 = zone.statistics().free_bytes
    n = 1 << 20
    r = q.reserve(n)
    assert r.nbytes == n and r.state == "reserved"
    assert zone.statistics().free_bytes <= free0 - n
    a = np.ndarray(n // 8, dtype=np.float64, buffer=r)
    a[:] = 3.0
    addr = a.__array_interface__["data"][0]
    r.commit()  # the array may live on; the memory is the consumer's now
    assert r.state == "committed"
    with pytest.raises(BufferError):
        memoryview(r)
    with pytest.raises(ClosedError):
        r.commit()
    view = q.get()
    b = np.frombuffer(view, dtype=np.float64)
    assert b.__array_interface__["data"][0] == addr  # zero copy: the very same memory
    assert b[12345] == 3.0 and b.flags.writeable
    b[0] = 7.0
    assert a[0] == 7.0  # the same bytes, seen from both ends
    assert q.statistics().reservations == 1
    del b, view, a
    assert q.statistics().reservations == 0
    assert zone.statistics().free_bytes == free0


def test_detach_waits_for_zero_copy_blocks(zone):
    q = Queue("zc", zone=zone)
    r = q.reserve(100)
    with pytest.raises(BufferError, match="still alive"):
        q.detach()
    r.commit()
    del r
    v = q.get()
    with pytest.raises(BufferError):
        q.detach()
    del v
    q.detach()
    assert q.detached
    with pytest.raises(ClosedError, match="detached"):
        q.put(b"x")


def test_reservations_not_committed_go_back(zone):
    q = Queue("zc", zone=zone)
    free0 = zone.statistics().free_bytes
    r = q.reserve(100_000)
    del r
    assert zone.statistics().free_bytes == free0
    with q.reserve(50_000) as r:
        memoryview(r)[:3] = b"abc"
    assert r.state == "released"
    r2 = q.reserve(10)
    r2.release()
    assert zone.statistics().free_bytes == free0
    with pytest.raises(ValueError):
        q.reserve(0)
    with pytest.raises(shmkit.ZoneFullError):
        q.reserve(64 << 20)
    assert zone.statistics().free_bytes == free0


def test_reserve_waits_for_a_free_reservation(zone):
    q = Queue("zc", zone=zone)
    n = shmkit._core.QUEUE_RESERVATIONS
    for _ in range(n):
        q.reserve(64).commit()
    with pytest.raises(QueueFull, match="reservations"):
        q.reserve(64, block=False)
    t = time.monotonic()
    with pytest.raises(QueueFull):
        q.reserve(64, timeout=0.1)
    assert time.monotonic() - t >= 0.09
    got = []
    th = threading.Thread(target=lambda: got.append(q.reserve(64, timeout=10)))
    th.start()
    time.sleep(0.05)
    view = q.get()  # taking the block and letting go of it frees one entry
    del view
    th.join(10)
    assert len(got) == 1 and got[0].state == "reserved"
    got[0].release()
    views = q.get_many(1000)
    assert len(views) == n - 1
    del views
    assert q.statistics().reservations == 0


def test_statistics(zone):
    q = Queue("s", 4096, zone=zone)
    q.put_many([b"a"] * 5)
    q.get()
    st = q.statistics()
    assert isinstance(st, shmkit.queue.QueueStats)
    assert (st.puts, st.gets, st.depth, st.drops, st.capacity, st.members) == (5, 1, 4, 0, 4096, 1)
    assert st.bytes_used == 4 * 32
    with pytest.raises(Exception):
        st.puts = 1  # frozen


def test_default_zone_is_used_when_none_is_given(monkeypatch):
    import shmkit.zone as zmod

    zname = unique()
    monkeypatch.setenv("SHMKIT_ZONE", zname)
    monkeypatch.setattr(zmod, "_default", None)
    try:
        q = Queue("jobs")
        assert q.zone.name == zname
        q.put(b"x")
        assert shmkit.Queue("jobs").get() == b"x"
        assert pickle.loads(pickle.dumps(q)).zone.name == zname
    finally:
        z = zmod._default
        zmod._default = None
        if z is not None:
            z.close()
        try:
            os.unlink(f"/dev/shm/{zname}")
        except FileNotFoundError:
            pass


# -- real processes -------------------------------------------------------------------------

def _echo(qin, qout, n):
    for _ in range(n):
        qout.put(qin.get(timeout=30))


def _echo_objects(qin, qout, n):
    for _ in range(n):
        obj = qin.get(timeout=30)
        qout.put({"back": obj})


def test_children_of_every_start_method_share_the_queue(zone, ctx, procs):
    a = Queue("a", zone=zone)
    b = Queue("b", zone=zone)
    p = ctx.Process(target=_echo, args=(a, b, 100))
    procs.append(p)
    p.start()
    for i in range(100):
        a.put(b"m%d" % i)
    assert [b.get(timeout=30) for _ in range(100)] == [b"m%d" % i for i in range(100)]
    p.join(30)
    assert p.exitcode == 0
    a.repair()  # the child's handle is gone (detached at exit, or scrubbed as dead)
    assert a.statistics().members == 1


def test_objects_cross_processes(zone, ctx, procs):
    a = Queue("oa", 1 << 20, zone=zone, mode="objects")
    b = Queue("ob", 1 << 20, zone=zone, mode="objects")
    p = ctx.Process(target=_echo_objects, args=(a, b, 3))
    procs.append(p)
    p.start()
    arr = np.arange(50_000)
    a.put(arr)
    a.put("s")
    a.put([1, {2: 3}])
    r = b.get(timeout=30)
    np.testing.assert_array_equal(r["back"], arr)
    assert b.get(timeout=30) == {"back": "s"}
    assert b.get(timeout=30) == {"back": [1, {2: 3}]}
    p.join(30)
    assert p.exitcode == 0


def _zero_copy_consumer(q, out):
    view = q.get(timeout=30)
    arr = np.frombuffer(view, dtype=np.int64)
    out.put((int(arr.sum()), len(arr)))
    del arr, view


def test_zero_copy_between_processes(zone, ctx, procs):
    q = Queue("zc", zone=zone)
    out = ctx.SimpleQueue()
    p = ctx.Process(target=_zero_copy_consumer, args=(q, out))
    procs.append(p)
    p.start()
    free0 = zone.statistics().free_bytes
    r = q.reserve(8 * 100_000)
    a = np.ndarray(100_000, dtype=np.int64, buffer=r)
    a[:] = np.arange(100_000)
    del a
    r.commit()
    assert out.get() == (sum(range(100_000)), 100_000)
    p.join(30)
    assert p.exitcode == 0
    wait_until(lambda: zone.statistics().free_bytes == free0, what="the block to return to the zone")


SIGINT_CHILD = r"""
import sys, shmkit
z = shmkit.Zone(sys.argv[1], 0)
q = shmkit.Queue("q", 4096, zone=z, spin=float(sys.argv[3]))
if sys.argv[2] == "put":
    while not q.full():
        q.put(bytes(100))
print("ready", flush=True)
try:
    if sys.argv[2] == "get":
        q.get()
    else:
        q.put(bytes(100))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(0)
sys.exit(3)
"""


@pytest.mark.parametrize("op,spin", [("get", "0"), ("put", "0"), ("get", "2.0"), ("put", "2.0")])
def test_sigint_interrupts_a_blocked_call(zone, name, op, spin, procs):
    # spin 2.0: a long spin budget, so the signal may arrive while the call spins, when no
    # system call is there to be interrupted; it must end the wait all the same
    p = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, name, op, spin], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.1)  # let it block
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "interrupted" in out


# -- 2 producers x 2 consumers --------------------------------------------------------------

REC = struct.Struct("<IIQ")  # producer, seq, crc of (producer, seq)


def _mpmc_producer(q, pid, n, batch):
    seq = 0
    while seq < n:
        k = min(batch, n - seq)
        msgs = [REC.pack(pid, s, zlib.crc32(b"%d/%d" % (pid, s))) for s in range(seq, seq + k)]
        if k == 1:
            q.put(msgs[0], timeout=60)
        else:
            q.put_many(msgs, timeout=60)
        seq += k


def _mpmc_consumer(q, n_producers, n, use_many, out):
    seen = [bytearray(n) for _ in range(n_producers)]
    last = [-1] * n_producers
    disorder = bad = dup = 0
    while True:
        try:
            msgs = q.get_many(256, timeout=60) if use_many else [q.get(timeout=60)]
        except ClosedError:
            break
        for m in msgs:
            pid, seq, crc = REC.unpack(m)
            if crc != zlib.crc32(b"%d/%d" % (pid, seq)):
                bad += 1
                continue
            if seq <= last[pid]:
                disorder += 1
            last[pid] = seq
            if seen[pid][seq]:
                dup += 1
            seen[pid][seq] = 1
    out.put((bad, disorder, dup, [bytes(s) for s in seen]))


def _mpmc(zone, procs, n, ctx):
    q = Queue("mpmc", 1 << 18, zone=zone)
    out = ctx.SimpleQueue()
    consumers = [ctx.Process(target=_mpmc_consumer, args=(q, 2, n, i == 1, out)) for i in range(2)]
    producers = [ctx.Process(target=_mpmc_producer, args=(q, i, n, 1 if i == 0 else 64))
                 for i in range(2)]
    procs.extend(consumers + producers)
    for p in consumers + producers:
        p.start()
    for p in producers:
        p.join(300)
        assert p.exitcode == 0
    q.close()
    results = [out.get() for _ in consumers]
    for p in consumers:
        p.join(60)
        assert p.exitcode == 0
    bad = sum(r[0] for r in results)
    disorder = sum(r[1] for r in results)
    dup = sum(r[2] for r in results)
    assert (bad, disorder, dup) == (0, 0, 0)
    for pid in range(2):
        a = np.frombuffer(results[0][3][pid], dtype=np.uint8)
        b = np.frombuffer(results[1][3][pid], dtype=np.uint8)
        assert not np.any(a & b), "a message was received twice"
        assert np.all(a | b), f"{int(n - (a | b).sum())} messages of producer {pid} were lost"
    st = q.statistics()
    assert st.puts == st.gets == 2 * n and st.drops == 0 and st.depth == 0


def test_two_producers_two_consumers_every_message_once_in_order(zone, procs):
    import multiprocessing as mp

    _mpmc(zone, procs, 100_000, mp.get_context("fork"))


@pytest.mark.slow
def test_two_producers_two_consumers_one_million_each(name, procs):
    import multiprocessing as mp

    z = shmkit.Zone(name, 8 << 20)
    try:
        _mpmc(z, procs, 1_000_000, mp.get_context("spawn"))
    finally:
        z.close()


def test_demo_runs_producers_and_consumers_across_processes():
    lines = []
    import shmkit.demo.queue

    res = shmkit.demo.queue.run(0.5, producers=1, consumers=1, batch=64, print=lines.append)
    assert res["messages"] > 0 and res["drops"] == 0
    assert any("M msg/s" in line for line in lines)

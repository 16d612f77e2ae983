"""shmkit.Board: values of every kind, the writer role, zero-copy views, waits, and -- with
real processes -- torn-read stress, a writer SIGKILLed mid-publication, readers that start
first, pickling to spawned children."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import shmkit
from shmkit import (Board, ClosedError, CorruptedError, NotOwnerError, ObjectMismatchError,
                    ObjectNotFoundError, ShmkitOSError, ShmkitTimeoutError, TooLargeError, Zone)

from conftest import kill_hard, run_python, wait_until

SPAWN = mp.get_context("spawn")


# --- values --------------------------------------------------------------------------------

def test_nothing_published_yet(zone):
    b = zone.board("b", 1024)
    assert b.version == 0
    assert b.read() == (None, 0)
    assert b.read(copy=False) == (None, 0)
    assert b.read_if_newer(0) is None
    with pytest.raises(ShmkitTimeoutError):
        b.wait_newer(0, timeout=0.05)


@pytest.mark.parametrize("value", [
    b"", b"bytes", bytearray(b"mutable"), "text", "ünïcödé \U0001f600", None, 42, 3.5,
    {"a": [1, 2, (3, 4)], "b": {"nested": True}}, [b"x" * 100000],
])
def test_round_trip(zone, value):
    b = zone.board("b", 1 << 20)
    r = zone.board("b", 1 << 20)
    v = b.publish(value)
    assert v == 1
    got, version = r.read()
    assert version == 1
    assert got == value
    expected_type = bytes if isinstance(value, (bytes, bytearray)) else type(value)
    assert type(got) is expected_type


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(10, dtype=">i8"),                                # big-endian
    np.array(3.25),                                            # 0-d
    np.zeros((0, 7), np.uint8),                                # empty
    np.arange(40, dtype=np.int16).reshape(5, 8)[::2, 1::3],    # not contiguous
    np.array([(1, 2.5, b"ab"), (3, 4.5, b"cd")],
             dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")]),  # structured
    np.array(["2024-01-02", "2025-03-04"], dtype="datetime64[D]"),
])
@pytest.mark.parametrize("copy", [True, False])
def test_arrays(zone, array, copy):
    b = zone.board("b", 1 << 16)
    r = zone.board("b", 1 << 16)
    b.publish(array)
    got, _ = r.read(copy=copy)
    assert isinstance(got, np.ndarray)
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    assert not got.flags.writeable  # shared between calls (and with the writer for views)


def test_pickled_arrays_travel_out_of_band(zone):
    b = zone.board("b", 1 << 20)
    big = np.arange(100000, dtype=np.int64)
    value = {"frame": big, "meta": {"id": 7}}
    b.publish(value)
    got, _ = zone.board("b", 1 << 20).read()
    np.testing.assert_array_equal(got["frame"], big)
    assert got["meta"] == {"id": 7}
    view, _ = zone.board("b", 1 << 20).read(copy=False)
    np.testing.assert_array_equal(view["frame"], big)
    assert not view["frame"].flags.writeable


def test_read_caches_until_the_version_changes(zone):
    b = zone.board("b", 1024)
    r = zone.board("b", 1024)
    b.publish({"x": 1})
    first = r.read()
    assert r.read() is first  # same tuple, no copy, no unpickling
    assert r.read_if_newer(0) is first
    assert r.read_if_newer(1) is None
    b.publish({"x": 2})
    second = r.read()
    assert second is not first and second == ({"x": 2}, 2)
    assert r.read_if_newer(1) is second


def test_user_kinds_and_read_into(zone):
    b = zone.board("b", 4096)
    r = zone.board("b", 4096)
    b.publish_bytes(b"\x01\x02\x03", kind=1234)
    assert r.read() == (b"\x01\x02\x03", 1)
    out = bytearray(3)
    assert r.read_into(out) == 1 and out == b"\x01\x02\x03"
    assert r.read_into(out, after=1) is None
    with pytest.raises(ValueError, match="3 bytes"):
        r.read_into(bytearray(4))
    a = np.arange(6, dtype=np.uint16).reshape(2, 3)
    b.publish(a)
    out = np.empty((2, 3), np.uint16)
    assert r.read_into(out) == 2
    np.testing.assert_array_equal(out, a)
    with pytest.raises(ValueError, match="shape"):
        r.read_into(np.empty((3, 2), np.uint16))
    b.publish({"not": "raw"})
    payload = r._cb.read(0)[0]  # raw: the pickle head (24 bytes), then the stream
    with pytest.raises(ValueError, match="pickled"):
        r.read_into(bytearray(len(payload) - 24))


def test_too_large_and_bad_arguments(zone):
    b = zone.board("b", 100)
    with pytest.raises(TooLargeError, match="max_bytes=100"):
        b.publish(b"x" * 101)
    with pytest.raises(TooLargeError):
        b.publish(np.zeros(100, np.uint8))  # the head needs room too
    with pytest.raises(TooLargeError):
        b.publish(list(range(100)))
    assert b.version == 0  # nothing half-published
    b.publish(b"x" * 100)
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(ValueError):
            zone.board("c", bad)
    with pytest.raises(ValueError):
        zone.board("c", 10, buffers=1)
    with pytest.raises(ValueError):
        zone.board("c", 10, buffers=65)
    with pytest.raises(shmkit.InvalidNameError):
        zone.board("", 10)
    with pytest.raises(TypeError):
        zone.board(b"bytes-name", 10)


def test_identity(zone):
    b = zone.board("b", 1000, buffers=4)
    assert (b.max_bytes, b.buffers) == (1000, 4)
    same = zone.board("b", 1000)
    assert same.buffers == 4
    attached = shmkit.Board("b", zone=zone)
    assert attached.max_bytes == 1000
    with pytest.raises(ObjectMismatchError, match="max_bytes=1000, not 2000"):
        zone.board("b", 2000)
    with pytest.raises(ObjectMismatchError, match="buffers=4, not 3"):
        zone.board("b", 1000, buffers=3)
    with pytest.raises(ObjectNotFoundError):
        shmkit.Board("missing", zone=zone)
    with pytest.raises(ObjectNotFoundError):
        zone.board("missing", 100, create=False)
    zone.create("raw", 64)
    with pytest.raises(shmkit.ObjectTypeError):
        zone.board("raw", 100)
    assert [o.type for o in zone.objects() if o.name == "b"] == ["board"]


# --- writer role -------------------------------------------------------------------------------

def test_writer_role(zone):
    a = zone.board("b", 100)
    b = zone.board("b", 100)
    assert not a.is_writer
    a.publish(b"1")  # the first publish claims the role
    assert a.is_writer and not b.is_writer
    with pytest.raises(NotOwnerError, match="writer"):
        b.publish(b"2")
    with pytest.raises(ShmkitOSError) as info:
        b.take_writer()
    assert info.value.errno == __import__("errno").EBUSY
    a.release_writer()
    b.publish(b"3")
    assert b.is_writer and not a.is_writer
    assert b.read() == (b"3", 2)
    b.close()  # closing gives the role up
    c = zone.board("b", 100, writer=True)
    assert c.is_writer
    st = c.statistics()
    assert st.writer_pid == os.getpid() and st.writer_alive and st.takeovers == 0


def test_writer_role_held_by_another_process(zone, procs):
    code = ("import sys, shmkit; z = shmkit.Zone(sys.argv[1]); b = z.board('b', 100, writer=True);"
            "b.publish(b'child'); print('ready', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, zone.name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "ready"
    b = zone.board("b", 100)
    assert b.read() == (b"child", 1)
    with pytest.raises(NotOwnerError, match=f"pid {p.pid}"):
        b.publish(b"mine")
    p.stdin.close()  # the writer exits cleanly: its role is released by close()
    p.wait(timeout=30)
    b.publish(b"mine")
    assert b.statistics().takeovers == 0


# --- zero-copy ---------------------------------------------------------------------------------

def test_zero_copy_view_is_pinned_until_the_next_value(zone):
    w = zone.board("b", 1 << 16, buffers=3)
    r = zone.board("b", 1 << 16)
    w.publish(np.full(1000, 1, np.int32))
    view, v1 = r.read(copy=False)
    assert r.read(copy=False)[0] is view  # cached while unchanged
    for i in range(2, 50):  # the writer goes on; it never touches the pinned buffer
        w.publish(np.full(1000, i, np.int32))
    assert (view == 1).all()
    assert r.intact(v1)
    assert w.statistics().pinned_skips > 0
    newer, v2 = r.read(copy=False)  # asking for the next value ends the old one's validity
    assert (newer == 49).all() and v2 == 49
    for i in range(50, 55):
        w.publish(np.full(1000, i, np.int32))
    assert not r.intact(v1)  # misuse detected: that buffer was reused
    assert (view != 1).any()


def test_zero_copy_readers_are_limited_by_buffers(zone):
    w = zone.board("b", 1024, buffers=4)
    w.publish(b"x")
    r1, r2, r3 = (zone.board("b", 1024) for _ in range(3))
    r1.read(copy=False)
    r2.read(copy=False)
    with pytest.raises(ShmkitOSError, match="buffers"):
        r3.read(copy=False)
    assert r3.read() == (b"x", 1)  # copies are always possible
    r1.release()
    r1.close()
    assert r3.read(copy=False)[0] == b"x"
    assert w.statistics().zero_copy_readers_in_use == 2


def test_view_survives_close_of_board_and_zone(name):
    z = Zone(name, 4 << 20)
    w = z.board("b", 1 << 16)
    w.publish(np.arange(1000))
    r = z.board("b", 1 << 16)
    view, _ = r.read(copy=False)
    r.close()
    w.close()
    z.close()  # the mapping stays while the view exists
    assert view.sum() == sum(range(1000))
    with pytest.raises(ClosedError):
        r.read()
    del view


def test_loan(zone):
    b = zone.board("b", 1 << 16)
    r = zone.board("b", 1 << 16)
    with b.loan((4, 5), "float64") as a:
        a[:] = 1.5
    got, v = r.read()
    assert v == 1 and got.shape == (4, 5) and (got == 1.5).all()
    with pytest.raises(RuntimeError):
        with b.loan((4, 5), "float64") as a:
            a[:] = 9
            raise RuntimeError("camera failed")
    assert b.version == 1 and (r.read()[0] == 1.5).all()  # nothing published
    with b.loan(nbytes=3) as m:
        m[:] = b"abc"
    assert r.read() == (b"abc", 2)
    with pytest.raises(TooLargeError):
        with b.loan((1 << 16,), "uint8"):
            pass
    with pytest.raises(TypeError):
        with b.loan():
            pass


# --- waiting -----------------------------------------------------------------------------------

def test_wait_newer_timeout_and_wakeup(zone):
    b = zone.board("b", 100)
    r = zone.board("b", 100, spin_us=0)
    t0 = time.monotonic()
    with pytest.raises(ShmkitTimeoutError):
        r.wait_newer(0, timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, b.publish, (b"late",)).start()
    assert r.wait_newer(0, timeout=10) == (b"late", 1)
    assert r.wait_newer(0, timeout=0) == (b"late", 1)  # already newer: no wait
    threading.Timer(0.05, b.publish, (b"later",)).start()
    assert r.wait(1, timeout=10) == 2  # waits without reading
    with pytest.raises(ShmkitTimeoutError):
        r.wait(2, timeout=0.01)
    st = r.statistics()
    assert st.waits >= 2 and st.sleeps >= 1 and st.waiters == 0


def test_close_wakes_a_waiting_thread(zone):
    r = zone.board("b", 100)
    errors = []

    def waiter():
        try:
            r.wait_newer(0, timeout=30)
        except ClosedError as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: r.statistics().sleeps >= 1, what="the thread to sleep")
    r.close()
    t.join(timeout=10)
    assert not t.is_alive() and len(errors) == 1


def test_ctrl_c_interrupts_wait_newer(zone, procs):
    code = ("import sys, shmkit; z = shmkit.Zone(sys.argv[1]); b = z.board('b', 100);"
            "print('waiting', flush=True)\n"
            "try:\n b.wait_newer(0)\n"
            "except KeyboardInterrupt:\n print('interrupted', flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code, zone.name], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "waiting"
    wait_until(lambda: zone.board("b", 100).statistics().waiters == 1, what="child to sleep")
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "interrupted"
    assert p.wait(timeout=10) == 0
    assert zone.board("b", 100).statistics().waiters == 0



def test_ctrl_c_while_spinning_is_not_lost(zone, procs):
    """A SIGINT that lands while wait_newer spins (no system call to interrupt) still
    interrupts it: the sleep that follows ends at a slice and the handler runs.  (It used
    to sleep on forever; so did a SIGINT landing between the waiter count and the sleep.)"""
    code = ("import sys, time, shmkit; z = shmkit.Zone(sys.argv[1]);"
            "b = z.board('spin', 100, spin_us=2_000_000);"  # spins ~0.5 s before sleeping
            "print('waiting', flush=True)\n"
            "t0 = time.monotonic()\n"
            "try:\n b.wait_newer(0)\n"
            "except KeyboardInterrupt:\n print('interrupted %.2f' % (time.monotonic() - t0), flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code, zone.name], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.1)  # inside its spin
    p.send_signal(signal.SIGINT)
    line = p.stdout.readline().strip()
    assert line.startswith("interrupted"), line
    assert float(line.split()[1]) < 5.0
    assert p.wait(timeout=10) == 0
    assert zone.board("spin", 100).statistics().waiters == 0

def _early_reader(zone, results):
    b = zone.board("early", 4096)
    results.put(("ready", os.getpid()))
    value, version = b.wait_newer(0, timeout=60)
    results.put((value, version))


def test_readers_that_start_first_wait_for_the_first_value(name, procs):
    z = Zone(name, 4 << 20)
    results = SPAWN.Queue()
    for _ in range(3):
        p = SPAWN.Process(target=_early_reader, args=(z, results))
        p.start()
        procs.append(p)
    for _ in range(3):
        assert results.get(timeout=60)[0] == "ready"
    b = z.board("early", 4096)
    wait_until(lambda: b.statistics().waiters >= 3, timeout=30, what="readers to sleep")
    assert b.version == 0
    b.publish({"first": True})
    got = [results.get(timeout=30) for _ in range(3)]
    assert got == [({"first": True}, 1)] * 3
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    z.close()


# --- torn-read stress with real processes ----------------------------------------------------

MAX_VALUE = 200_000


def _make_value(n: int, rng: random.Random) -> bytes:
    size = rng.choice((rng.randrange(0, 64), rng.randrange(64, 4096), rng.randrange(4096, MAX_VALUE)))
    body = (n.to_bytes(8, "little") * (size // 8 + 1))[:size]
    head = struct.pack("<QQ", n, size)
    return head + body + hashlib.blake2b(head + body, digest_size=16).digest()


def _check_value(data) -> int:
    """The number the value carries; raises if it is torn."""
    data = bytes(data)
    n, size = struct.unpack_from("<QQ", data)
    body = data[16:16 + size]
    if len(data) != 16 + size + 16:
        raise AssertionError(f"value {n}: length {len(data)} does not match its size {size}")
    if hashlib.blake2b(data[:16 + size], digest_size=16).digest() != data[16 + size:]:
        raise AssertionError(f"value {n}: checksum mismatch (torn)")
    if body != (n.to_bytes(8, "little") * (size // 8 + 1))[:size]:
        raise AssertionError(f"value {n}: body is not its own")
    return n


def _stress_writer(zone, seconds, results):
    b = zone.board("stress", MAX_VALUE + 64, buffers=5, writer=True)
    rng = random.Random(1)
    values = [_make_value(i, rng) for i in range(64)]  # prepared: publish as fast as possible
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(64):
            b.publish(values[n % 64])
            n += 1
    b.publish(b"STOP")
    results.put(("writer", n))


def _stress_reader(zone, copy, results):
    b = zone.board("stress", MAX_VALUE + 64)
    results.put(("ready", os.getpid()))
    seen = bad = 0
    version = 0
    errors = []
    while True:
        value, v = b.wait_newer(version, timeout=60, copy=copy)
        if v <= version:
            bad += 1
        version = v
        if bytes(value[:4]) == b"STOP":
            break
        try:
            n = _check_value(value)
            # the writer cycles through 64 prepared values: the number must match the version
            if n != (v - 1) % 64:
                raise AssertionError(f"version {v} carries value {n}")
        except AssertionError as e:
            bad += 1
            errors.append(str(e))
        seen += 1
    st = b.statistics()
    results.put(("reader", copy, seen, bad, errors[:5], st.retries, st.fallbacks))


def test_stress_three_readers_never_see_a_torn_value(name, procs):
    """A writer publishes checksummed values of 0..200 kB as fast as it can for ~5 s while
    3 readers (2 copying, 1 zero-copy) verify every value they see."""
    seconds = float(os.environ.get("SHMKIT_STRESS_SECONDS", "5"))
    z = Zone(name, 16 << 20)
    z.board("stress", MAX_VALUE + 64, buffers=5)
    results = SPAWN.Queue()
    readers = [SPAWN.Process(target=_stress_reader, args=(z, copy, results))
               for copy in (True, True, False)]
    for p in readers:
        p.start()
        procs.append(p)
    for _ in readers:
        assert results.get(timeout=60)[0] == "ready"
    w = SPAWN.Process(target=_stress_writer, args=(z, seconds, results))
    w.start()
    procs.append(w)
    got = [results.get(timeout=seconds + 60) for _ in range(4)]
    written = [g for g in got if g[0] == "writer"][0][1]
    reports = [g for g in got if g[0] == "reader"]
    print(f"\nstress: {written} values published in {seconds} s")
    for _, copy, seen, bad, errors, retries, fallbacks in reports:
        print(f"  reader copy={copy}: verified {seen}, torn {bad}, seqlock retries {retries}, "
              f"pinned fallbacks {fallbacks} {errors}")
        assert bad == 0, errors
        assert seen > 100
    assert written > 1000
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    z.close()


# --- writer death --------------------------------------------------------------------------------

def _die_mid_publish(zone):
    b = zone.board("crash", 1 << 20, writer=True)
    b.publish({"complete": 1})
    b.publish({"complete": 2})
    b._cb._debug_die_mid_publish(600_000)  # SIGKILL with a publication half written


def test_writer_killed_mid_publish_readers_keep_the_last_value(name, procs):
    z = Zone(name, 8 << 20)
    r = z.board("crash", 1 << 20)
    p = SPAWN.Process(target=_die_mid_publish, args=(z,))
    p.start()
    procs.append(p)
    p.join(timeout=60)
    assert p.exitcode == -signal.SIGKILL
    assert r.read() == ({"complete": 2}, 2)  # the half-written value is invisible
    st = r.statistics()
    assert st.writer_pid == p.pid and not st.writer_alive
    # a new writer takes over and continues the versions
    w = z.board("crash", 1 << 20, writer=True)
    for i in range(3, 10):  # every buffer gets reused, the half-written one included
        assert w.publish({"complete": i}) == i
        assert r.read() == ({"complete": i}, i)
    assert w.statistics().takeovers == 1
    z.close()


def _hot_writer(zone, ready):
    b = zone.board("hot", 1 << 20, writer=True)
    rng = random.Random(2)
    values = []
    for i in range(8):
        body = rng.randbytes((1 << 20) - 16)
        values.append(hashlib.blake2b(body, digest_size=16).digest() + body)
    ready.set()
    n = 0
    while True:  # as fast as it can until killed: it is almost always inside a copy
        b.publish(values[n % 8])
        n += 1


def _valid(blob) -> bool:
    blob = bytes(blob)
    return hashlib.blake2b(blob[16:], digest_size=16).digest() == blob[:16]


def test_writer_sigkilled_at_random_moments(name, procs):
    z = Zone(name, 16 << 20)
    r = z.board("hot", 1 << 20)
    rng = random.Random()
    for round_ in range(3):
        ready = SPAWN.Event()
        p = SPAWN.Process(target=_hot_writer, args=(z, ready))
        p.start()
        procs.append(p)
        assert ready.wait(60)
        start = r.version
        wait_until(lambda: r.version > start + 20, timeout=30, what="publications")
        time.sleep(rng.uniform(0, 0.05))  # a random moment inside the publish loop
        kill_hard(p.pid)
        p.join(timeout=30)
        before = r.version
        value, version = r.read()
        assert version == before and _valid(value)
        view, _ = r.read(copy=False)
        assert _valid(view)
        r.release()
        assert not r.statistics().writer_alive
    assert r.statistics().takeovers == 2  # each new writer took over from a dead one
    z.close()


# --- processes and pickling -------------------------------------------------------------------

def _child_reads_and_publishes(board, q, released):
    value, version = board.read()
    q.put((value, version))
    assert board.wait_newer(version, timeout=30) == (b"go", 2)
    assert released.wait(30)
    board.publish(b"from child")  # the parent released the role
    q.put("done")


def test_board_pickles_by_name(name, ctx, procs):
    z = Zone(name, 4 << 20)
    b = z.board("p", 1000)
    b.publish({"hello": "child"})
    q = ctx.Queue()
    released = ctx.Event()
    p = ctx.Process(target=_child_reads_and_publishes, args=(b, q, released))
    p.start()
    procs.append(p)
    assert q.get(timeout=60) == ({"hello": "child"}, 1)
    b.publish(b"go")
    b.release_writer()
    released.set()
    assert q.get(timeout=60) == "done"
    p.join(timeout=30)
    assert p.exitcode == 0
    assert b.read() == (b"from child", 3)
    assert pickle.loads(pickle.dumps(b)).read() == (b"from child", 3)
    z.close()


def test_fork_child_is_not_the_writer(zone):
    b = zone.board("f", 100, writer=True)
    b.publish(b"parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            b.publish(b"child")
        except NotOwnerError:
            code = 0 if b.read() == (b"parent", 1) else 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert b.is_writer and b.publish(b"again") == 2


# --- corruption and closing ---------------------------------------------------------------------

def test_corrupted_latest_word_is_reported(zone):
    b = zone.board("c", 100)
    b.publish(b"ok")
    off = zone.find("c").offset
    latest = zone.view(off + 64, 8)
    saved = bytes(latest)
    latest[:8] = struct.pack("<Q", (1 << 8) | 200)  # slot 200 of 3
    r = zone.board("c", 100)
    with pytest.raises(CorruptedError):
        r.read()
    with pytest.raises(CorruptedError):
        r.read(copy=False)
    latest[:8] = saved
    assert r.read() == (b"ok", 1)


def test_corrupted_payload_heads_are_reported(zone):
    b = zone.board("c", 1000)
    b.publish(np.arange(4))
    off = zone.find("c").offset
    slot_idx = struct.unpack("<Q", zone.view(off + 64, 8))[0] & 0xFF
    data = zone.view(off + 320 + 3 * 64 + 64 + slot_idx * 1024, 16)
    data[4:6] = struct.pack("<H", 40)  # ndim 40
    with pytest.raises(CorruptedError):
        zone.board("c", 1000).read()


def test_closed_board(zone):
    b = zone.board("b", 100)
    b.close()
    b.close()
    for call in (b.read, lambda: b.publish(b"x"), lambda: b.wait_newer(0, 0.01), b.statistics):
        with pytest.raises(ClosedError):
            call()
    assert "closed" in repr(b)


def test_statistics(zone):
    w = zone.board("s", 1000, buffers=5)
    r = zone.board("s", 1000)
    w.publish(b"a")
    r.read()
    r.read(copy=False)
    st = r.statistics()
    assert (st.version, st.max_bytes, st.buffers, st.zero_copy_readers) == (1, 1000, 5, 3)
    assert st.copies == 1 and st.pins == 1 and st.zero_copy_readers_in_use == 1
    assert st.writer_pid == os.getpid() and st.writer_alive and not st.is_writer
    assert abs(st.last_publish_ns - time.time_ns()) < 60e9
    with pytest.raises(Exception):
        st.version = 2  # frozen


def test_follow(zone):
    b = zone.board("f", 100)
    r = zone.board("f", 100)
    b.publish(b"1")
    it = r.follow(timeout=5)
    assert next(it) == (b"1", 1)
    b.publish(b"2")
    b.publish(b"3")
    assert next(it) == (b"3", 3)  # the newest: 2 was replaced before we looked


def test_demo_runs_briefly():
    import shmkit.demo.frames

    figures = shmkit.demo.frames.run(1.0, consumers=2, fps=30, out=open(os.devnull, "w"))
    assert figures["published"] >= 10
    assert len(figures["consumers"]) == 2
    for c in figures["consumers"]:
        assert c["frames"] >= 5 and c["bad"] == 0


def test_without_numpy_bytes_still_work(zone):
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import shmkit\n"
        "z = shmkit.Zone(sys.argv[1])\n"
        "b = z.board('nonp', 100)\n"
        "b.publish(b'raw'); assert b.read() == (b'raw', 1)\n"
        "b.publish({'k': [1]}); assert b.read() == ({'k': [1]}, 2)\n"
        "try:\n    b.loan((2,), 'u1').__enter__()\n"
        "except ImportError as e:\n    print(e)\n")
    r = run_python(code, zone.name)
    assert "pip install shmkit[numpy]" in r.stdout

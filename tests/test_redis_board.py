"""RedisBoard: values of tens of MB are never torn or mixed; the writer role is a lease;
wait_newer blocks server-side."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import time

import pytest

from shmkit import NotOwnerError, ObjectMismatchError, ShmkitOSError, TooLargeError

SIZE = 12 << 20


def _frame(i: int) -> bytes:
    """A 12 MiB value whose every byte depends on i, with its digest in front."""
    body = bytes([i % 251]) * (SIZE - 32)
    return hashlib.sha256(body).digest() + body


def _writer(zone, name, count, out):
    b = zone.board(name, SIZE)
    for i in range(1, count + 1):
        b.publish(_frame(i))
    out.put("done")


def _reader(zone, name, last, out):
    b = zone.board(name, SIZE)
    seen = 0
    version = 0
    torn = 0
    while version < last:
        try:
            value, version = b.wait_newer(version, timeout=30)
        except TimeoutError:
            break
        if hashlib.sha256(value[32:]).digest() != value[:32] or value[32] != version % 251:
            torn += 1
        seen += 1
    out.put((seen, torn, version))


def _claim_and_hang(zone, name, out):
    b = zone.board(name, 1000, writer=True)
    b.publish(b"from the first writer")
    out.put("claimed")
    time.sleep(120)


@pytest.fixture
def ctx():
    return mp.get_context("spawn")


def test_large_values_never_torn(redis_zone, ctx):
    zone = redis_zone()
    zone.board("frames", SIZE)
    out = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(zone, "frames", 10, out)) for _ in range(2)]
    for r in readers:
        r.start()
    w = ctx.Process(target=_writer, args=(zone, "frames", 10, out))
    w.start()
    try:
        results = [out.get(timeout=120) for _ in range(3)]
    finally:
        for p in readers + [w]:
            p.join(60)
            if p.is_alive():
                p.kill()
    reads = [r for r in results if r != "done"]
    assert len(reads) == 2
    for seen, torn, last in reads:
        assert torn == 0 and seen >= 1 and last == 10


def test_writer_role_is_a_lease(redis_zone, ctx):
    zone = redis_zone()
    out = ctx.Queue()
    p = ctx.Process(target=_claim_and_hang, args=(zone, "b", out))
    p.start()
    try:
        assert out.get(timeout=60) == "claimed"
        b = zone.board("b", 1000)
        assert b.read() == (b"from the first writer", 1)
        with pytest.raises(NotOwnerError):
            b.publish(b"second")
        with pytest.raises(ShmkitOSError):
            b.take_writer()
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + zone.lease + 2
        while True:
            try:
                v = b.publish(b"taken over")
                break
            except NotOwnerError:
                assert time.monotonic() < deadline, "the dead writer's lease never ran out"
                time.sleep(0.1)
        assert v == 2 and b.is_writer and b.statistics().takeovers == 1
    finally:
        p.kill()
        p.join(10)


def test_a_value_of_tens_of_megabytes(redis_zone):
    b = redis_zone().board("big", 48 << 20)
    value = bytes(range(256)) * (40 << 12)               # 40 MiB
    assert b.publish(value) == 1
    got, version = b.read()
    assert version == 1 and got == value


def test_limits_and_mismatch(redis_zone):
    zone = redis_zone()
    b = zone.board("b", 100)
    with pytest.raises(TooLargeError):
        b.publish(b"x" * 101)
    with pytest.raises(ObjectMismatchError):
        zone.board("b", 200)
    assert zone.board("b").max_bytes == 100     # None attaches
    b.publish("text")
    same = b.read()
    assert b.read() is same                     # unchanged: the same tuple again
    np = pytest.importorskip("numpy")
    a = zone.board("arrays", 4096)
    arr = np.arange(6, dtype="int16").reshape(2, 3)
    a.publish(arr)
    value, _ = a.read()
    assert (value == arr).all() and not value.flags.writeable
    out = np.empty_like(arr)
    assert a.read_into(out) == 1 and (out == arr).all()

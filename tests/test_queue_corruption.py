"""A queue whose shared words were overwritten (issue 13 #7): no loop over shared state is
unbounded, impossible positions and lengths are CorruptedError, every wait honours its
timeout and Ctrl-C, and none of it burns a CPU.  Every scenario runs in a plain child
interpreter: a crash is the child's death by a signal, a hang a child that does not end.
The C side (tests/c/test_queue.c, test_corruption) fuzzes the same words under ASan.
"""

from __future__ import annotations

import os

import pytest

from child_support import run_child
from conftest import unique

pytestmark = pytest.mark.timeout(120)

# core/layout.h, struct shk_queue_sh
TAIL_POS, TAIL_HI, HEAD_POS, HEAD_HI = 64, 72, 128, 136
SLOTS, SLOT_SIZE = 512, 128           # struct shk_qslot[256]: claim_pos at +16, claim_size +24
RING = 36864                          # ring_rel for the default layout


@pytest.fixture
def shm_name():
    n = unique("shmkit-qcor")
    yield n
    try:
        os.unlink(f"/dev/shm/{n}")
    except FileNotFoundError:
        pass


def child(code: str, *args: str, timeout: float = 30.0, sigint_after_line: str | None = None):
    rc, out, err, hung = run_child(code, *args, timeout=timeout,
                                   sigint_after_line=sigint_after_line)
    assert not hung, f"child did not finish (hang)\n{out}\n{err}"
    assert rc is not None and rc >= 0, f"child died of signal {rc and -rc}\n{out}\n{err}"
    return rc, out, err


CORRUPT = r'''
import os, resource, struct, sys, time
import shmkit
name, field, how = sys.argv[1:4]
z = shmkit.Zone(name, 4 << 20)
os.unlink("/dev/shm/" + name)
q = z.queue("q", 4096)
for i in range(5):
    q.put(b"m%d" % i * 20)
q.get()
buf, base = z.segment.buf, z.find("q").offset
OFF = {"tail_pos": 64, "tail_hi": 72, "head_pos": 128, "head_hi": 136,
       "claim_pos": 512 + 16, "claim_size": 512 + 24}
def word(off):
    return struct.unpack_from("<Q", buf, base + off)[0]
def put_word(off, v):
    struct.pack_into("<Q", buf, base + off, v & (2**64 - 1))
if field == "record":      # the header of the record at the head (word, then pos)
    head = word(128)
    rec = 36864 + (head & 4095)
    put_word(rec, {"huge": 2**64 - 1, "zero": 0}.get(how, 0x0102030405060708))
else:
    v = word(OFF[field])
    put_word(OFF[field], {"zero": 0, "huge": 2**64 - 16, "odd": v + 8, "back": v - 4096,
                          "ahead": v + (1 << 20), "lag": v | (1 << 60)}[how])
cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
for call in ("put", "get", "get_many", "put_many", "reserve", "qsize", "statistics", "repair"):
    t0 = time.monotonic()
    try:
        if call == "put":
            q.put(b"x" * 100, timeout=0.2)
        elif call == "get":
            q.get(timeout=0.2)
        elif call == "get_many":
            q.get_many(timeout=0.2)
        elif call == "put_many":
            q.put_many([b"y" * 50] * 3, timeout=0.2)
        elif call == "reserve":
            q.reserve(100, timeout=0.2).release()
        else:
            getattr(q, call)()
        how = "ok"
    except Exception as e:
        how = type(e).__name__
    print(call, how, round(time.monotonic() - t0, 2), flush=True)
print("cpu", round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0, 2), flush=True)
'''

ALLOWED = {"ok", "CorruptedError", "QueueFull", "QueueEmpty", "ZoneFullError"}


@pytest.mark.parametrize("field,how", [
    ("tail_pos", "zero"), ("tail_pos", "huge"), ("tail_pos", "odd"), ("tail_pos", "back"),
    ("tail_pos", "ahead"), ("tail_hi", "huge"), ("head_pos", "zero"), ("head_pos", "odd"),
    ("head_pos", "ahead"), ("head_hi", "lag"), ("head_hi", "huge"), ("claim_pos", "back"),
    ("claim_size", "huge"), ("record", "huge"), ("record", "zero"), ("record", "junk")])
def test_every_call_on_a_corrupted_queue_ends_in_time_without_burning_a_cpu(field, how, shm_name):
    rc, out, err = child(CORRUPT, shm_name, field, how, timeout=60)
    assert rc == 0, (out, err)
    results = dict((ln.split()[0], ln.split()[1:]) for ln in out.splitlines())
    for call in ("put", "get", "get_many", "put_many", "reserve", "qsize", "statistics",
                 "repair"):
        what, took = results[call]
        assert what in ALLOWED, (call, what, out)
        assert float(took) < 2.0, (call, took, out)  # timeouts of 0.2 s, and no more
    # eight calls, four of them waiting 0.2 s: asleep, not spinning (a spin is 50 us a wait)
    assert float(results["cpu"][0]) < 0.6, out


def test_ctrl_c_ends_a_get_without_timeout_on_a_corrupted_queue(shm_name):
    # the head names a record that is never committed: nothing will ever come
    rc, out, err = child(f"""
        import os, struct, time
        import shmkit
        z = shmkit.Zone({shm_name!r}, 4 << 20)
        os.unlink("/dev/shm/{shm_name}")
        q = z.queue("q", 4096)
        head = struct.unpack_from("<Q", z.segment.buf, z.find("q").offset + 128)[0]
        struct.pack_into("<Q", z.segment.buf, z.find("q").offset + 64, head + 64)  # tail
        print("waiting", flush=True)
        try:
            q.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """, timeout=10, sigint_after_line="waiting")
    assert "interrupted" in out, (rc, out, err)

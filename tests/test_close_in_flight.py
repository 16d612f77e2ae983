"""Closing anything while calls are in flight (issue 13 #1): for every object kind, a call
blocked (or busy) in another thread when its handle, its zone or its segment is closed
either finishes as if the close had waited for it, or raises ClosedError at once; it
never crashes the interpreter and never waits past its timeout.

What each kind does (docs/ARCHITECTURE.md, "Closing"):

* queue: its handle refuses calls once the zone is closed, so waits in progress end with
  ClosedError when the zone, or the handle (``detach()``), is closed;
* sync objects, boards, configs: their handles stay usable after ``zone.close()`` (they
  hold the mapping), so a wait in progress goes on until its result or timeout; closing
  the handle itself ends the wait with ClosedError;
* dict, zone, arrays, segments: calls in progress finish (the mapping stays until the last
  handle, view or call lets go); the next call on a closed dict or zone is ClosedError.

Each group of scenarios runs in a plain child interpreter, so that a crash is seen as the
child's death by a signal; the scenarios of a group run side by side, each in its own
zone, each call in a thread of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import unique

pytestmark = pytest.mark.timeout(180)

SCENARIOS = r'''
import json, os, sys, threading, time
import numpy as np
import shmkit

prefix, group = sys.argv[1], sys.argv[2]
LONG = 20.0    # a wait that only a close can end in time
SHORT = 4.0    # a wait that goes on after the close, to its timeout

zones = []
def new_zone(tag):
    name = f"{prefix}-{tag}"
    z = shmkit.Zone(name, 16 << 20)
    os.unlink("/dev/shm/" + name)
    zones.append(z)
    return z

def full_queue(q):
    for item in (b"x" * 200, b""):  # not even an empty message fits afterwards
        try:
            while True:
                q.put_nowait(item)
        except shmkit.QueueFull:
            pass
    return q

def until(seconds, step):
    """A busy call: step() again and again for that long (it may raise)."""
    def call():
        t = time.monotonic() + seconds
        while time.monotonic() < t:
            step()
    return call

# tag: setup(zone) -> (call, handle); the closers take (zone, handle)
def queue_cases():
    c = {}
    for closer in ("zone", "handle", "both"):
        c[f"queue-get/{closer}"] = lambda z: (lambda q: (lambda: q.get(timeout=LONG), q))(z.queue("q", 1 << 16))
        c[f"queue-get-objects/{closer}"] = lambda z: (lambda q: (lambda: q.get(timeout=LONG), q))(z.queue("q", 1 << 16, mode="objects"))
        c[f"queue-get_many/{closer}"] = lambda z: (lambda q: (lambda: q.get_many(timeout=LONG), q))(z.queue("q", 1 << 16))
        c[f"queue-put/{closer}"] = lambda z: (lambda q: (lambda: q.put(b"x" * 200, timeout=LONG), q))(full_queue(z.queue("q", 4096)))
        c[f"queue-put_many/{closer}"] = lambda z: (lambda q: (lambda: q.put_many([b"x" * 200] * 3, timeout=LONG), q))(full_queue(z.queue("q", 4096)))
        def reserve(z):
            q = z.queue("q", 1 << 16)
            for _ in range(shmkit._core.QUEUE_RESERVATIONS):
                q.reserve(64).commit()
            return (lambda: q.reserve(64, timeout=LONG)), q
        c[f"queue-reserve/{closer}"] = reserve
    def commit(z):
        q = full_queue(z.queue("q", 4096))
        r = q.reserve(64)
        return (lambda: r.commit(timeout=LONG)), q
    c["queue-commit/zone"] = commit  # (detach() refuses while a reservation is alive)
    return c

def sync_cases():
    def lock(z):
        lk = z.lock("l"); lk.acquire()
        return (lambda t: lk.acquire(timeout=t)), lk
    def rlock(z):
        lk = z.rlock("l"); lk.acquire()
        return (lambda t: lk.acquire(timeout=t)), lk
    def rw_read(z):
        rw = z.rwlock("rw"); rw.acquire_write()
        return (lambda t: rw.acquire_read(timeout=t)), rw
    def rw_write(z):
        rw = z.rwlock("rw"); rw.acquire_read()
        return (lambda t: rw.acquire_write(timeout=t)), rw
    def sem(z):
        s = z.semaphore("s", 0)
        return (lambda t: s.acquire(timeout=t)), s
    def event(z):
        e = z.event("e")
        return (lambda t: e.wait(t)), e
    def cond(z):
        cv = z.condition("c")
        def call(t):
            with cv:
                return cv.wait(t)
        return call, cv
    def barrier(z):
        b = z.barrier("b", 2)
        return (lambda t: b.wait(t)), b
    def board(z):
        b = z.board("b", 100)
        return (lambda t: b.wait(timeout=t)), b
    def board_newer(z):
        b = z.board("b", 100)
        return (lambda t: b.wait_newer(0, timeout=t)), b
    def config(z):
        cfg = z.config("cfg")
        return (lambda t: cfg.wait_for_change(0, timeout=t)), cfg
    c = {}
    for kind, make in (("lock", lock), ("rlock", rlock), ("rwlock-read", rw_read),
                       ("rwlock-write", rw_write), ("semaphore", sem), ("event", event),
                       ("condition", cond), ("barrier", barrier), ("board", board),
                       ("board-wait_newer", board_newer), ("config", config)):
        for closer in ("zone", "handle", "both"):
            t = SHORT if closer == "zone" else LONG
            c[f"{kind}/{closer}"] = (lambda make, t: lambda z: (lambda call, h: (lambda: call(t), h))(*make(z)))(make, t)
    return c

def busy_cases():
    def dictionary(z):
        d = z.dict("d", 1 << 20)
        def step():
            d[b"k"] = b"v" * 500
            d.flush_all()
        return until(3.0, step), d
    def zone_calls(z):
        return until(3.0, lambda: z.free(z.alloc(1 << 16))), None
    def array(z):
        a = z.ndarray("a", (2_000_000,), "float64")
        def step():
            np.add(a, 1.0, out=a)          # NumPy lets go of the GIL over large arrays
        return until(1.5, step), a
    c = {}
    for closer in ("zone", "handle", "both"):
        c[f"dict/{closer}"] = dictionary
    c["zone/zone"] = zone_calls
    c["ndarray/zone"] = array
    return c

def close(tag, z, h):
    closer = tag.rsplit("/", 1)[1]
    if closer in ("handle", "both"):
        if hasattr(h, "detach"):
            h.detach()
        else:
            h.close()
    if closer in ("zone", "both"):
        z.close()

cases = {"queue": queue_cases, "sync": sync_cases, "busy": busy_cases}[group]()
results, threads = {}, []
for tag, setup in cases.items():
    z = new_zone(tag.replace("/", "-"))
    call, h = setup(z)
    def run(tag=tag, call=call):
        try:
            call()
            how = "returned"
        except BaseException as e:
            how = type(e).__name__
        results[tag] = (how, time.monotonic())
        print("done", tag, how, flush=True)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    threads.append((tag, z, h, th))
time.sleep(0.5)  # every waiting call is asleep by now
closed_at = {}
for tag, z, h, th in sorted(threads, key=lambda t: not t[0].endswith("/zone")):
    print("closing", tag, flush=True)
    closed_at[tag] = time.monotonic()
    close(tag, z, h)
for tag, z, h, th in threads:
    th.join(LONG + 10)
report = {tag: (results[tag][0], results[tag][1] - closed_at[tag]) if tag in results else ("hang", None)
          for tag in cases}
print("REPORT " + json.dumps(report), flush=True)
'''

# segments: a copy out of a segment's memory in another thread while it is closed
SEGMENT = r'''
import os, sys, threading, time
import numpy as np
import shmkit
name = sys.argv[1]
seg = shmkit.Segment(name, "c", 32 << 20)
seg.unlink()
arr = np.frombuffer(seg.buf, dtype=np.uint8)
done = []
def run():
    t = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < t:
        n += int(arr[::4096].sum()) + len(arr.copy())
    done.append(n)
th = threading.Thread(target=run)
th.start()
time.sleep(0.3)
seg.close()                      # the array keeps the mapping
th.join(30)
print("copied", bool(done), seg.closed, flush=True)
del arr
print("survived", flush=True)
'''


def run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (f"child died ({p.returncode}, signal "
                               f"{-p.returncode if p.returncode < 0 else None})\n"
                               f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def report_of(p: subprocess.CompletedProcess) -> dict:
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("REPORT ")]
    assert line, p.stdout + p.stderr
    return json.loads(line[0][len("REPORT "):])


def test_queue_waits_end_with_closed_error_when_the_zone_or_handle_closes():
    rep = report_of(run_child(SCENARIOS, unique("shmkit-cif"), "queue"))
    for tag, (how, after) in rep.items():
        assert how == "ClosedError", (tag, how)
        assert after < 2.0, (tag, after)  # at once, not at the end of its 20 s timeout


def test_sync_board_and_config_waits_go_on_after_the_zone_closes_and_end_when_their_handle_does():
    rep = report_of(run_child(SCENARIOS, unique("shmkit-cif"), "sync"))
    for tag, (how, after) in rep.items():
        kind, closer = tag.rsplit("/", 1)
        if closer == "zone":
            # the handle keeps the mapping: the wait goes on to its timeout (4 s, begun
            # before the zones were closed)
            timed_out = {"barrier": "BrokenBarrierError", "board": "ShmkitTimeoutError",
                         "board-wait_newer": "ShmkitTimeoutError",
                         "config": "ShmkitTimeoutError"}.get(kind, "returned")
            assert how == timed_out, (tag, how)
            assert 0.5 < after < 8.0, (tag, after)
        else:
            assert how == "ClosedError", (tag, how)
            assert after < 2.0, (tag, after)


def test_busy_calls_on_dict_zone_and_array_survive_a_close():
    rep = report_of(run_child(SCENARIOS, unique("shmkit-cif"), "busy"))
    assert rep["dict/zone"][0] == "ClosedError"
    assert rep["dict/handle"][0] == "ClosedError"
    assert rep["dict/both"][0] == "ClosedError"
    assert rep["zone/zone"][0] == "ClosedError"
    assert rep["ndarray/zone"][0] == "returned"  # the array holds the mapping


def test_copy_out_of_a_segment_while_it_is_closed():
    name = unique("shmkit-cif")
    try:
        p = run_child(SEGMENT, name)
    finally:
        try:
            os.unlink(f"/dev/shm/{name}")
        except FileNotFoundError:
            pass
    assert "copied True True" in p.stdout and "survived" in p.stdout, p.stdout


# -- across processes: a queue closed by another process, a barrier aborted by another -------

CROSS = r'''
import os, sys, threading, time
import shmkit
name = sys.argv[1]
z = shmkit.Zone(name)
q = z.queue("q")
b = z.barrier("b", 3)
got = {}
def getter():
    try:
        q.get(timeout=20); got["get"] = "returned"
    except Exception as e:
        got["get"] = type(e).__name__
def putter():
    p = z.queue("full", 4096)
    try:
        p.put(b"x" * 300, timeout=20); got["put"] = "returned"
    except Exception as e:
        got["put"] = type(e).__name__
def waiter():
    try:
        b.wait(20); got["barrier"] = "returned"
    except Exception as e:
        got["barrier"] = type(e).__name__
ths = [threading.Thread(target=f) for f in (getter, putter, waiter)]
for t in ths:
    t.start()
print("waiting", flush=True)
t0 = time.monotonic()
for t in ths:
    t.join(30)
print(sorted(got.items()), round(time.monotonic() - t0, 2), flush=True)
'''


def test_a_queue_closed_or_a_barrier_aborted_by_another_process_ends_the_waits_here(name):
    import shmkit

    z = shmkit.Zone(name, 8 << 20)
    try:
        full = z.queue("full", 4096)
        try:
            while True:
                full.put_nowait(b"x" * 300)
        except shmkit.QueueFull:
            pass
        p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CROSS), name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "waiting"
            q, b = z.queue("q"), z.barrier("b", 3)
            deadline = time.monotonic() + 20
            while b.n_waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # the get and the put are asleep too
            q.close()
            full.close()
            b.abort()
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, err
        assert "('barrier', 'BrokenBarrierError')" in out, out + err
        assert "('get', 'ClosedError')" in out and "('put', 'ClosedError')" in out, out + err
        assert float(out.split()[-1]) < 5, out  # woken, not timed out
    finally:
        z.close()

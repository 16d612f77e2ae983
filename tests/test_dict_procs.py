"""shmkit.Dict across real processes: exact totals from concurrent increments, readers
that only ever see values that were written while writers are SIGKILLed in the middle
of their writes, and a process killed at each point inside a write (holding the shard
lock) after which the next process carries on with a consistent dict."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest

from conftest import kill_hard, run_python, wait_until
from shmkit import Dict, Zone, _core

pytestmark = pytest.mark.timeout(180)


def _incr_worker(zone_name, n, go):
    z = Zone(zone_name)
    d = Dict("counters", zone=z, create=False)
    go.wait(60)
    for i in range(n):
        d.incr(f"k{i % 8}", 1, init=0)
        d.incr("float", 0.5, init=0.0)
        if i % 10 == 0:
            d.incr("big", 2**70, init=0)      # arbitrary precision, added by the core
    d.close()


def test_four_processes_increment_to_exact_totals(name, ctx):
    z = Zone(name, 16 << 20)
    try:
        d = z.dict("counters", 1 << 20, shards=2)
        n = 4000
        go = ctx.Event()
        ps = [ctx.Process(target=_incr_worker, args=(name, n, go)) for _ in range(4)]
        try:
            for p in ps:
                p.start()
            go.set()
            for p in ps:
                p.join(150)
                assert p.exitcode == 0
        finally:
            for p in ps:
                if p.is_alive():
                    p.kill()
        assert [d[f"k{i}"] for i in range(8)] == [4 * n // 8] * 8
        assert d["float"] == 4 * n * 0.5
        assert d["big"] == 4 * (n // 10) * 2**70
        assert d.check() == []
    finally:
        z.close()
        z.unlink()


# -- readers and writers, with writers killed all the time -------------------------------------

FRAME = r'''
import os, random, struct, sys, time, zlib
from shmkit import Dict, Zone

def frame(key, n, size=0):
    """A value that says which key it belongs to, and a checksum over everything."""
    body = f"{key}|{os.getpid()}|{n}|".encode() + os.urandom(size)
    return struct.pack("<I", zlib.crc32(body)) + body

def valid(key, v):
    if not isinstance(v, bytes) or len(v) < 4:
        return False
    (crc,) = struct.unpack_from("<I", v)
    return zlib.crc32(v[4:]) == crc and v[4:].split(b"|", 1)[0] == key.encode()

z = Zone(sys.argv[1])
d = Dict("crashy", zone=z, create=False)
'''

WRITER = FRAME + r'''
rnd = random.Random(os.getpid())
# precomputed frames, mostly large: a write is then mostly time inside the shard lock
# (copying, evicting), which is where the kills should land
pool = {}
for i in range(64):
    key = f"key{i}"
    pool[key] = [frame(key, j, size) for j, size in enumerate((0, 12000, 30000))]
lists = {f"list{i}": [frame(f"list{i}", j, 100) for j in range(4)] for i in range(4)}
print("ready", flush=True)
while True:
    key = f"key{rnd.randrange(64)}"
    op = rnd.random()
    try:
        if op < 0.6:
            d.set(key, rnd.choice(pool[key]), ttl=rnd.choice((None, None, 0.05, 5)))
        elif op < 0.7:
            d.safe_set(key, rnd.choice(pool[key]))
        elif op < 0.76:
            d.delete(key)
        elif op < 0.82:
            d.incr(f"ctr{rnd.randrange(4)}", 1, init=0)
        elif op < 0.92:
            lk = f"list{rnd.randrange(4)}"
            d.rpush(lk, rnd.choice(lists[lk]))
            if d.llen(lk) > 20:
                d.lpop(lk)
        elif op < 0.96:
            d.pop(key, None)
        else:
            d.expire(key, rnd.choice((0, 0.02, 3)))
    except MemoryError:
        pass   # safe_set with no room
'''

READER = FRAME + r'''
rnd = random.Random(os.getpid())
reads = bad = 0
while d.get("__stop__") is None:
    key = f"key{rnd.randrange(64)}"
    v = d.get(key)
    reads += 1
    if v is not None and not valid(key, v):
        bad += 1
        print("BAD", key, repr(v[:60]), flush=True)
    lk = f"list{rnd.randrange(4)}"
    for e in d.get(lk) or ():
        if not valid(lk, e):
            bad += 1
            print("BAD", lk, repr(e[:60]), flush=True)
    c = d.get(f"ctr{rnd.randrange(4)}")
    if c is not None and not (isinstance(c, int) and c > 0):
        bad += 1
print(reads, bad, flush=True)
'''


def _valid(key, v):
    import struct

    if not isinstance(v, bytes) or len(v) < 4:
        return False
    (crc,) = struct.unpack_from("<I", v)
    return zlib.crc32(v[4:]) == crc and v[4:].split(b"|", 1)[0] == key.encode()


def test_readers_see_only_written_values_while_writers_are_killed(name, procs):
    z = Zone(name, 32 << 20)
    try:
        # small enough that writes evict: eviction gets killed half way too
        d = z.dict("crashy", 512 << 10, shards=4)
        spawn = lambda code, *args: subprocess.Popen(  # noqa: E731
            [sys.executable, "-c", code, name, *args], stdout=subprocess.PIPE, text=True)
        readers = [spawn(READER) for _ in range(2)]
        writers = [spawn(WRITER) for _ in range(3)]
        procs.extend(readers + writers)
        for w in writers:
            assert w.stdout.readline() == "ready\n"
        rnd = random.Random(7)
        kills = 0
        start = time.monotonic()
        # at least 5 s and 10 kills, of which 3 inside the lock (bounded, for a slow machine)
        while (time.monotonic() - start < 5 or kills < 10
               or d.statistics().recoveries < 3) and time.monotonic() - start < 90:
            i = rnd.randrange(len(writers))
            time.sleep(rnd.uniform(0.01, 0.08))    # the writers run freely in between
            kill_hard(writers[i].pid)
            writers[i].wait(10)
            kills += 1
            writers[i] = spawn(WRITER)
            procs.append(writers[i])
            assert writers[i].stdout.readline() == "ready\n"
        for w in writers:
            kill_hard(w.pid)
            w.wait(10)
        d["__stop__"] = 1
        for r in readers:
            out, _ = r.communicate(timeout=60)
            lines = out.split("\n")
            reads, bad = map(int, [x for x in lines if x and not x.startswith("BAD")][-1].split())
            assert bad == 0, out
            assert reads > 100
        st = d.statistics()
        assert kills >= 10 and st.recoveries >= 3, (kills, st)
        assert d.check() == []
        del d["__stop__"]
        for key in d:                  # whatever is left is something a writer wrote
            v = d[key] if key in d else None
            if key.startswith("ctr"):
                assert isinstance(v, int)
            elif key.startswith("list"):
                assert all(_valid(key, e) for e in v or ())
            elif v is not None:
                assert _valid(key, v)
        # and it keeps working
        assert d.flush_all() > 0 and d.free_space() == d.capacity()
        for i in range(1000):
            d[f"after{i}"] = i
        assert all(d[f"after{i}"] == i for i in range(1000)) and d.check() == []
    finally:
        z.close()
        z.unlink()


# -- a SIGKILL at each point inside a write ---------------------------------------------------

CRASH = r'''
import sys
from shmkit import Dict, Zone
z = Zone(sys.argv[1])
d = Dict("points", zone=z, create=False)
op, point = sys.argv[2], int(sys.argv[3])
d._debug_crash_at(point)
if op == "replace":
    d["target"] = b"new" * 60        # another size: new cells, then the old ones freed
elif op == "update":
    d["target"] = b"NEW" * 40        # the same size: in place, with the undo record
elif op == "update_set":
    d.set("target", b"NEW" * 40)     # the same, through set()
elif op == "update_flags":
    d.set("target", b"NEW" * 40, flags=7)   # in place by the general path
elif op == "insert":
    d["fresh"] = b"new" * 40
elif op == "evict":
    d["target"] = b"big" * 3000      # needs room: evicts
elif op == "delete":
    del d["target"]
elif op == "lpush":
    d.lpush("list", "new")
elif op == "rpush":
    d.rpush("list", "new")
elif op == "rpop":
    d.rpop("list")
elif op == "flush":
    d.flush_all()
elif op == "incr":
    d.incr("counter", 41)
elif op == "expire":
    d.expire("counter", 100)
print("not reached", flush=True)
'''

POINTS = [
    ("insert", "DCRASH_AFTER_ALLOC"), ("replace", "DCRASH_AFTER_ALLOC"),
    ("replace", "DCRASH_HALF_WRITTEN"), ("replace", "DCRASH_AFTER_PUBLISH"),
    ("replace", "DCRASH_MID_FREE"), ("replace", "DCRASH_MID_LRU"), ("delete", "DCRASH_MID_LRU"),
    ("update", "DCRASH_MID_INPLACE"), ("update_set", "DCRASH_MID_INPLACE"),
    ("update_flags", "DCRASH_MID_INPLACE"),
    ("evict", "DCRASH_MID_EVICT"), ("evict", "DCRASH_MID_FREE"), ("lpush", "DCRASH_MID_LIST"),
    ("rpush", "DCRASH_MID_LIST"), ("rpop", "DCRASH_MID_LIST"), ("flush", "DCRASH_MID_FLUSH"),
    ("incr", "DCRASH_IN_PLACE"), ("expire", "DCRASH_IN_PLACE"),
]


@pytest.mark.parametrize("op,point", POINTS, ids=[f"{o}-{p[7:].lower()}" for o, p in POINTS])
def test_killed_inside_a_write(name, op, point):
    z = Zone(name, 8 << 20)
    try:
        d = z.dict("points", 64 << 10, shards=1)
        for i in range(210):                       # nearly full: a big value must evict
            d[f"filler{i}"] = b"f" * 200
        d["target"] = b"old" * 40
        d["counter"] = 1
        d.rpush("list", "a")
        d.rpush("list", "b")
        before = d.statistics()
        r = subprocess.run([sys.executable, "-c", CRASH, name, op,
                            str(getattr(_core, point))], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
        # the next process carries on: this read takes the lock and repairs the shard
        target = d.get("target")
        assert target in (None, b"old" * 40, b"new" * 60, b"NEW" * 40, b"big" * 3000)
        if op in ("replace", "update", "update_set", "update_flags", "evict"):
            assert target is not None               # old or new, never gone
        if op.startswith("update"):
            assert target in (b"old" * 40, b"NEW" * 40)
        assert d.get("fresh") in (None, b"new" * 40)
        assert d.get("counter") in (None, 1, 42)
        assert d.get("list") in (None, ["a", "b"], ["new", "a", "b"], ["a", "b", "new"], ["a"])
        after = d.statistics()
        assert after.recoveries == before.recoveries + 1
        assert d.check() == []
        if op not in ("flush", "evict"):
            assert after.items >= before.items - 1
        for i in range(300):                        # and it keeps working
            d[f"later{i}"] = b"l" * 100
        assert d["later299"] == b"l" * 100 and d.check() == []
    finally:
        z.close()
        z.unlink()


def test_a_reader_never_waits_for_a_dead_writer(name):
    """The writer dies with the shard's seq odd and its lock held: a lock-free reader
    stops retrying, takes the lock, and the repair happens then."""
    z = Zone(name, 8 << 20)
    try:
        d = z.dict("points", 64 << 10, shards=1)
        d["target"] = b"old" * 40
        r = subprocess.run([sys.executable, "-c", CRASH, name, "replace",
                            str(_core.DCRASH_AFTER_PUBLISH)], capture_output=True, timeout=60)
        assert r.returncode == -signal.SIGKILL
        t = time.monotonic()
        assert "target" in d
        assert time.monotonic() - t < 5
    finally:
        z.close()
        z.unlink()


def test_worker_pool_example_runs():
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "worker_pool_cache.py")
    r = subprocess.run([sys.executable, example, "--quick", "--workers", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 workers, 900 requests" in r.stdout
    served = int(r.stdout.split("served ")[1].split(",")[0])
    computed = int(r.stdout.split("pages computed ")[1].split()[0])
    assert served > 0 and 20 <= computed < served     # the cache did its job


# -- a wait for a shard's lock is a wait like any other: Ctrl-C ends it -----------------------

STOPPED_WRITER = r'''
import sys
from shmkit import Dict, Zone, _core
z = Zone(sys.argv[1])
d = Dict("stopped", zone=z, create=False)
d._debug_crash_at(-_core.DCRASH_HALF_WRITTEN)   # SIGSTOP there, the shard's lock held
d["fresh"] = b"x" * 100
print("finished", flush=True)
'''

BLOCKED = r'''
import sys, time
from shmkit import Dict, Zone
z = Zone(sys.argv[1])
d = Dict("stopped", zone=z, create=False)
op = sys.argv[2]
def call():
    if op == "get":
        return d["k"]
    if op == "set":
        d["k2"] = b"new"
        return d.get("k2")
    if op == "in":
        return "k" in d
    if op == "incr":
        return d.incr("n", 1, init=0)
    if op == "len":
        return len(d)
print("calling", flush=True)
t = time.monotonic()
try:
    call()
    print("returned", flush=True)
except KeyboardInterrupt:
    print("interrupted %.3f" % (time.monotonic() - t), flush=True)
sys.stdin.readline()            # the parent lets the writer finish: now it answers
print("again %r" % (call(),), flush=True)
'''


def _readline(f, timeout):
    """A line from f, or an AssertionError after timeout seconds (never an endless wait)."""
    got = []
    t = threading.Thread(target=lambda: got.append(f.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert got, f"no line within {timeout} s"
    return got[0]


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("op", ["get", "set", "in", "incr", "len"])
def test_ctrl_c_interrupts_a_wait_for_a_stopped_writers_shard(name, op, procs):
    """A writer stopped (SIGSTOP) in the middle of a write holds its shard's lock, seq odd.
    Another process's call on that shard, read or write, finds the lock held, sleeps for
    it without spinning, and SIGINT ends the wait with KeyboardInterrupt at once (the
    shard wait is the one wait shape, run by shk_py_wait); once the writer is continued,
    the same call answers, and the dict is consistent."""
    z = Zone(name, 8 << 20)
    try:
        d = z.dict("stopped", 64 << 10, shards=1)
        d["k"] = b"old"
        d["n"] = 0
        writer = subprocess.Popen([sys.executable, "-c", STOPPED_WRITER, name],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(writer)
        wait_until(lambda: _proc_state(writer.pid)[0] == "T", timeout=30,
                   what="the writer to stop inside its write")
        blocked = subprocess.Popen([sys.executable, "-c", BLOCKED, name, op],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(blocked)
        assert _readline(blocked.stdout, 30) == "calling\n"
        # blocked in the call, and asleep (not spinning): over a second its CPU time hardly
        # moves (it wakes every 100 ms to let signal handlers run, for microseconds)
        time.sleep(0.2)
        cpu0 = _proc_state(blocked.pid)[1]
        time.sleep(1.0)
        cpu1 = _proc_state(blocked.pid)[1]
        assert blocked.poll() is None
        assert cpu1 - cpu0 < 0.1, (cpu0, cpu1)
        t = time.monotonic()
        blocked.send_signal(signal.SIGINT)
        line = _readline(blocked.stdout, 10)
        assert line.startswith("interrupted"), line
        assert time.monotonic() - t < 2.0
        assert float(line.split()[1]) >= 1.2
        assert d.statistics().recoveries == 0         # the writer is alive: nothing to repair
        writer.send_signal(signal.SIGCONT)
        assert writer.wait(30) == 0 and writer.stdout.read() == "finished\n"
        blocked.stdin.write("go\n")
        blocked.stdin.flush()
        expected = {"get": b"old", "set": b"new", "in": True, "incr": 1, "len": 3}[op]
        assert _readline(blocked.stdout, 30) == f"again {expected!r}\n"
        assert blocked.wait(30) == 0
        assert d["fresh"] == b"x" * 100 and d["k"] == b"old" and d.check() == []
    finally:
        z.close()
        z.unlink()

"""Zones: identity, init once, attach from other processes, named objects, growth,
statistics, version/corruption checks."""

from __future__ import annotations

import multiprocessing as mp
import os
import struct
import time

import pytest

import shmkit
from shmkit import (CorruptedError, InvalidFreeError, ObjectExistsError, ObjectNotFoundError,
                    VersionMismatchError, Zone, ZoneFullError, ZoneInitError, ZoneMismatchError,
                    _core)

from conftest import kill_hard, run_python, unique, wait_until


def test_create_attach_same_identity(name):
    with Zone(name, 1 << 20, tag="alpha") as a, Zone(name, 1 << 20, tag="alpha") as b:
        off = a.alloc(100)
        a.view(off, 5)[:] = b"hello"
        assert bytes(b.view(off, 5)) == b"hello"
        assert b.declared_size == 1 << 20
        assert b.tag == b"alpha"


def test_size_zero_attaches_to_whatever_exists(name):
    with Zone(name, 2 << 20) as a, Zone(name) as b:
        assert b.size == a.size == 2 << 20


def test_size_zero_without_zone_leaves_nothing_behind(name):
    with pytest.raises(FileNotFoundError):
        Zone(name)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_mismatched_size_names_both_values(name):
    with Zone(name, 1 << 20):
        with pytest.raises(ZoneMismatchError) as ei:
            Zone(name, 2 << 20)
        assert str(1 << 20) in str(ei.value) and str(2 << 20) in str(ei.value)
        assert isinstance(ei.value, ValueError)


def test_mismatched_tag_names_both_values(name):
    with Zone(name, 1 << 20, tag="one"):
        with pytest.raises(ZoneMismatchError) as ei:
            Zone(name, 1 << 20, tag="two")
        assert "one" in str(ei.value) and "two" in str(ei.value)
        # no tag given: any tag is accepted
        with Zone(name, 1 << 20) as z:
            assert z.tag == b"one"


def test_bad_arguments(name):
    with pytest.raises(ValueError):
        Zone(name, -1)
    with pytest.raises(ValueError):
        Zone(name, 1 << 20, max_size=1 << 10)
    with pytest.raises(ValueError):
        Zone(name, 1 << 20, tag="x" * 65)
    with pytest.raises(ValueError):
        Zone(name, 1 << 20, backend="nonsense")
    with pytest.raises(ValueError):
        Zone(name, 1024)  # below the minimum zone size
    assert not os.path.exists(f"/dev/shm/{name}") or os.path.getsize(f"/dev/shm/{name}") == 0


def test_init_runs_once_and_before_others_attach(name):
    calls = []

    def init(z):
        calls.append(os.getpid())
        info = z.create("ready-marker", 64)
        z.view(info.offset, 5)[:] = b"init!"

    with Zone(name, 1 << 20, init=init) as a:
        with Zone(name, 1 << 20, init=init) as b:
            assert calls == [os.getpid()]
            off = b.find("ready-marker").offset
            assert bytes(b.view(off, 5)) == b"init!"


def test_init_failure_leaves_zone_reinitialisable(name):
    def bad(z):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Zone(name, 1 << 20, init=bad)
    ran = []
    with Zone(name, 1 << 20, init=lambda z: ran.append(1)) as z:
        assert ran == [1]
        assert z.info()["state"] == _core.ZS_READY


def _racer(name, barrier, results):
    barrier.wait()

    def init(z):
        info = z.create("init-count", 8)
        v = z.view(info.offset, 8)
        v[:] = struct.pack("<Q", struct.unpack("<Q", v)[0] + 1)
        time.sleep(0.05)  # widen the window in which others try to attach

    with Zone(name, 1 << 20, init=init) as z:
        off = z.find("init-count").offset
        results.put(struct.unpack("<Q", z.view(off, 8))[0])


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_racing_creators_one_init(name, method, procs):
    ctx = mp.get_context(method)
    n = 6
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    ps = [ctx.Process(target=_racer, args=(name, barrier, results)) for _ in range(n)]
    procs.extend(ps)
    for p in ps:
        p.start()
    counts = [results.get(timeout=60) for _ in range(n)]
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert counts == [1] * n


DYING_INIT = """
import os, sys, time
from shmkit import Zone
def init(z):
    print("initialising", flush=True)
    time.sleep(60)
Zone(sys.argv[1], 1 << 20, init=init)
"""


def test_dying_initialiser_reported_promptly_then_reinitialised(name, procs):
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", DYING_INIT, name], stdout=subprocess.PIPE,
                             text=True)
    procs.append(child)
    assert child.stdout.readline().strip() == "initialising"
    waiter = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from shmkit import Zone, ZoneInitError
t0 = time.monotonic()
try:
    Zone({name!r}, 1 << 20, timeout=30)
except ZoneInitError as e:
    print("ZoneInitError", round(time.monotonic() - t0, 3), e, flush=True)
"""], stdout=subprocess.PIPE, text=True)
    procs.append(waiter)
    # Kill the initialiser only once the waiter waits for it: a waiter that arrives after
    # the death takes the initialisation over instead (no error to report).  A process
    # sleeping on the state word counts itself in the header's state_waiters, the uint32
    # after the state (core/layout.h); read from the segment's file, which attaches
    # nothing.  Python needs anywhere from 50 ms to seconds to start on a loaded machine.
    waiters_at = shmkit._core.ZONE_OFF_STATE + 4

    def waiting() -> bool:
        with open(f"/dev/shm/{name}", "rb") as f:
            raw = os.pread(f.fileno(), 4, waiters_at)
        return len(raw) == 4 and struct.unpack("<I", raw)[0] >= 1

    wait_until(waiting, timeout=60, what="the waiter to wait for the initialiser")
    assert waiter.poll() is None
    t_kill = time.monotonic()
    kill_hard(child.pid)
    out, _ = waiter.communicate(timeout=30)
    noticed = time.monotonic() - t_kill
    assert out.startswith("ZoneInitError"), out
    assert noticed < 5, f"took {noticed:.2f}s to notice the dead initialiser"
    # the next declaration initialises it again
    ran = []
    with Zone(name, 1 << 20, init=lambda z: ran.append(1)) as z:
        assert ran == [1]
        assert z.check() == []


def test_attach_from_spawn_fork_forkserver_and_subprocess(zone, ctx, procs):
    info = zone.create("shared", 32)
    zone.view(info.offset, 5)[:] = b"12345"
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads_and_writes, args=(zone, q))
    procs.append(p)
    p.start()
    assert q.get(timeout=60) == b"12345"
    p.join(30)
    assert p.exitcode == 0
    assert bytes(zone.view(info.offset, 5)) == b"54321"
    # a plain subprocess attaches by name
    out = run_python(f"""
from shmkit import Zone
z = Zone({zone.name!r})
print(bytes(z.view(z.find("shared").offset, 5)).decode())
""").stdout.strip()
    assert out == "54321"


def _child_reads_and_writes(zone, q):
    off = zone.find("shared").offset
    q.put(bytes(zone.view(off, 5)))
    zone.view(off, 5)[:] = b"54321"


def test_named_objects(zone):
    assert zone.objects() == []
    a = zone.create("a", 100)
    with pytest.raises(ObjectExistsError):
        zone.create("a", 100)
    b, created = zone.find_or_create("b", 5000)
    assert created
    b2, created2 = zone.find_or_create("b", 5000)
    assert not created2 and b2.offset == b.offset
    assert "a" in zone and "zzz" not in zone
    names = sorted(o.name for o in zone.objects())
    assert names == ["a", "b"]
    assert zone.find("a").type == "raw"
    assert zone.usable_size(a.offset) >= 100
    zone.destroy("a")
    with pytest.raises(ObjectNotFoundError):
        zone.find("a")
    with pytest.raises(ObjectNotFoundError):
        zone.destroy("a")
    with pytest.raises(shmkit.InvalidNameError):
        zone.create("x" * 64, 10)
    with pytest.raises(shmkit.InvalidNameError):
        zone.create("", 10)
    assert zone.check() == []


def test_many_named_objects_grow_the_directory(zone):
    infos = [zone.create(f"obj-{i}", 16 + i % 100) for i in range(500)]
    assert len(zone.objects()) == 500
    for i, info in enumerate(infos):
        assert zone.find(f"obj-{i}").offset == info.offset
    for i in range(0, 500, 2):
        zone.destroy(f"obj-{i}")
    assert len(zone.objects()) == 250
    assert zone.check() == []


def test_alloc_free_and_errors(zone):
    offs = [zone.alloc(n) for n in (1, 8, 9, 100, 2048, 2049, 100_000)]
    assert len(set(offs)) == len(offs)
    with pytest.raises(InvalidFreeError, match="wrong chunk"):
        zone.free(offs[3] + 8)
    with pytest.raises(InvalidFreeError, match="outside"):
        zone.free(10)
    for o in offs:
        zone.free(o)
    with pytest.raises(InvalidFreeError, match="already free"):
        zone.free(offs[0])
    with pytest.raises(ValueError):
        zone.alloc(0)
    assert zone.check() == []


def test_zone_full_is_a_memory_error_that_says_what(zone):
    with pytest.raises(ZoneFullError) as ei:
        zone.alloc(64 << 20)
    assert isinstance(ei.value, MemoryError)
    assert str(64 << 20) in str(ei.value)
    held = []
    with pytest.raises(ZoneFullError):
        while True:
            held.append(zone.alloc(2048))
    st = zone.statistics()
    assert st.classes[8].fails >= 1
    for o in held:
        zone.free(o)
    assert zone.check() == []


def test_calloc_and_view_bounds(zone):
    o = zone.alloc(4096)
    zone.view(o, 4096)[:] = b"\xff" * 4096
    zone.free(o)
    o2 = zone.calloc(4096)
    assert bytes(zone.view(o2, 4096)) == bytes(4096)
    with pytest.raises(IndexError):
        zone.view(zone.size - 10, 100)
    with pytest.raises(IndexError):
        zone.view(0, 10)  # the header is not handed out


def test_stats_are_honest(zone):
    before = zone.statistics()
    assert before.free_bytes == before.free_pages * 4096 + before.slab_free_bytes
    offs = [zone.alloc(100) for _ in range(10)]
    st = zone.statistics()
    cls128 = st.classes[4]
    assert cls128.size == 128 and cls128.used == 10 and cls128.reqs >= 10
    assert st.slab_free_bytes == (cls128.total - cls128.used) * 128
    big = zone.alloc(st.largest_free_bytes)  # the largest run really is allocatable
    zone.free(big)
    for o in offs:
        zone.free(o)
    assert zone.statistics().free_pages == before.free_pages


def test_growth_seen_by_other_processes_and_views_stay_valid(name):
    with Zone(name, 256 << 10, max_size=64 << 20) as z:
        first = z.alloc(1000)
        v = z.view(first, 1000)
        v[:4] = b"keep"
        offs = [z.alloc(1 << 20) for _ in range(8)]  # far beyond 256 KiB
        st = z.statistics()
        assert st.size > 256 << 10 and st.grow_count >= 1 and st.extents >= 2
        assert bytes(v[:4]) == b"keep"
        z.view(offs[-1], 4)[:] = b"tail"
        out = run_python(f"""
from shmkit import Zone
z = Zone({name!r})
print(z.size, bytes(z.view({offs[-1]}, 4)).decode())
""").stdout.split()
        assert int(out[0]) == z.size and out[1] == "tail"
        assert z.check() == []


def test_growth_by_another_process_is_followed(name):
    with Zone(name, 256 << 10, max_size=64 << 20) as z:
        out = run_python(f"""
from shmkit import Zone
z = Zone({name!r})
o = z.alloc(4 << 20)
z.view(o, 5)[:] = b"grown"
print(o)
""").stdout
        off = int(out)
        assert bytes(z.view(off, 5)) == b"grown"  # the mapping followed the growth
        assert z.size >= 4 << 20


def test_fixed_zone_does_not_grow(zone):
    with pytest.raises(ZoneFullError):
        zone.alloc(8 << 20)


def test_version_mismatch(name):
    z = Zone(name, 1 << 20)
    z.close()
    with open(f"/dev/shm/{name}", "r+b") as f:
        f.seek(8)
        word = struct.unpack("<Q", f.read(8))[0]
        f.seek(8)
        f.write(struct.pack("<Q", word ^ (1 << 48)))  # another layout version
    with pytest.raises(VersionMismatchError) as ei:
        Zone(name)
    assert "format word" in str(ei.value)


def test_not_a_zone(name):
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"PLAIN DATA" * 1000)
    with pytest.raises(CorruptedError, match="not a shmkit zone"):
        Zone(name, 1 << 20)
    with open(f"/dev/shm/{name}", "rb") as f:  # and it was not touched
        assert f.read(10) == b"PLAIN DATA"


def test_pickle_attaches_by_name(zone):
    import pickle
    z2 = pickle.loads(pickle.dumps(zone))
    assert z2.name == zone.name and z2.size == zone.size
    z2.close()


def test_anonymous_zone_shared_with_fork_children(procs):
    z = Zone(None, 1 << 20, backend="anonymous")
    info = z.create("x", 16)
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_write_x, args=(z,))
    procs.append(p)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert bytes(z.view(info.offset, 4)) == b"fork"
    with pytest.raises(TypeError, match="fork"):
        import pickle
        pickle.dumps(z)
    z.close()


def _write_x(z):
    z.view(z.find("x").offset, 4)[:] = b"fork"


def test_sysv_zone(procs):
    key = 0x5A000000 | (os.getpid() & 0xFFFF)
    z = Zone(None, 1 << 20, backend="sysv", key=key)
    try:
        info = z.create("s", 10)
        z.view(info.offset, 4)[:] = b"sysv"
        out = run_python(f"""
from shmkit import Zone
z = Zone(None, backend="sysv", key={key})
print(bytes(z.view(z.find("s").offset, 4)).decode())
""").stdout.strip()
        assert out == "sysv"
    finally:
        z.unlink()
        z.close()


def test_file_zone(tmp_path):
    path = tmp_path / "zone.bin"
    with Zone(None, 1 << 20, backend="file", path=path) as z:
        z.create("f", 10)
    with Zone(None, backend="file", path=path) as z:
        assert z.find("f").size == 10
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(OSError):
        Zone(None, 1 << 20, backend="file", path=link)


def test_closed_zone_raises(name):
    z = Zone(name, 1 << 20)
    o = z.alloc(10)
    v = z.view(o, 10)
    z.close()
    with pytest.raises(shmkit.ClosedError):
        z.alloc(10)
    v[:3] = b"abc"  # a view taken before close keeps the mapping alive
    assert bytes(v[:3]) == b"abc"
    del v

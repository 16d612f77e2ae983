"""The shmkit command, run as a real command (subprocess): ls, info, check, rm, gc, dump,
doctor, exit codes, --json parsed."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

from shmkit import Segment, Zone, _core
from conftest import kill_hard, unique
from segment_helpers import (read_line, spawn_python, sysv_exists, sysv_key,  # noqa: F401
                             sysv_keys, wait_until)

pytestmark = pytest.mark.timeout(120)


def shmkit(*args, check_code=None, input=None):
    r = subprocess.run([sys.executable, "-m", "shmkit", *args], capture_output=True,
                       text=True, timeout=60, input=input)
    if check_code is not None:
        assert r.returncode == check_code, (r.returncode, r.stdout, r.stderr)
    return r


def shmkit_json(*args, code=0):
    r = shmkit(*args, "--json", check_code=code)
    return json.loads(r.stdout)


@pytest.fixture
def prefix():
    """A unique name prefix; every POSIX segment under it is removed at teardown."""
    p = unique("shmkit-clitest")
    yield p
    for n in os.listdir("/dev/shm"):
        if n.startswith(p) or n == f"sem.{p}":
            os.unlink(f"/dev/shm/{n}")


def foreign(name, size=4096, data=b""):
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    os.pwrite(fd, data, 0)
    os.close(fd)


# -- the command itself ----------------------------------------------------------------------------

def test_entry_point_and_usage_errors():
    exe = shutil.which("shmkit", path=os.path.dirname(sys.executable))
    assert exe, "the shmkit console script is installed next to the interpreter"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("shmkit ")
    assert shmkit(check_code=2).stderr  # no subcommand: usage
    assert "invalid choice" in shmkit("frobnicate", check_code=2).stderr
    assert "exactly one" in shmkit("info", check_code=2).stderr
    assert "not an integer" in shmkit("info", "--key", "zz", check_code=2).stderr
    assert shmkit("rm", check_code=2).stderr
    r = shmkit("--help", check_code=0)
    for cmd in ("ls", "info", "check", "rm", "gc", "dump", "doctor", "bench", "demo"):
        assert cmd in r.stdout
    assert "exit codes" in r.stdout


def test_demo_runs_and_cleans_up():
    """`make run`'s demonstration: every act reports exact results, the zone it used is
    consistent, and nothing it created is left behind."""
    before = set(os.listdir("/dev/shm"))
    r = subprocess.run([sys.executable, "-m", "shmkit", "demo", "--duration", "0.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "M msg/s" in out                       # the queue moved messages
    assert "0 bad" in out and "bad" not in out.replace("0 bad", "")  # frames verified
    assert out.count("(exact)") + out.count(": exact") == 2, out  # lock and dict totals
    assert "zone.check(): consistent" in out
    leftovers = {n for n in set(os.listdir("/dev/shm")) - before if "demo" in n}
    assert not leftovers


# -- ls ----------------------------------------------------------------------------------------------

def test_ls_marks_shmkit_segments_and_zones(prefix, sysv_key):
    seg = Segment(f"{prefix}-seg", "x", 5000, lifecycle="unlink_on_last_close")
    zone = Zone(f"{prefix}-zone", 1 << 20)
    sv = Segment(None, "x", 8192, key=sysv_key, perm=0o640)
    foreign(f"{prefix}-foreign")
    try:
        rows = {r["display_name"]: r for r in shmkit_json("ls", f"{prefix}*")}
        assert set(rows) == {f"{prefix}-seg", f"{prefix}-zone", f"{prefix}-foreign"}
        s = rows[f"{prefix}-seg"]
        assert s["kind"] == "segment" and s["lifecycle"] == "unlink_on_last_close"
        assert s["size"] == 5000 and s["perms"] == "600" and s["nattch"] == 1
        assert s["cpid"] == os.getpid() and "in-use" in s["status"]
        assert rows[f"{prefix}-zone"]["kind"] == "zone"
        f = rows[f"{prefix}-foreign"]
        assert f["kind"] is None and f["lifecycle"] is None and f["nattch"] == 0
        sysv = [r for r in shmkit_json("ls", "--sysv") if r["key"] == sysv_key]
        assert len(sysv) == 1
        r = sysv[0]
        assert r["shmid"] == sv.shmid and r["size"] == 8192 and r["perms"] == "640"
        assert r["kind"] == "segment" and r["lifecycle"] == "persist" and r["nattch"] == 1
        assert not [x for x in shmkit_json("ls", "--posix") if x["backend"] == "sysv"]
        only = {r["display_name"] for r in shmkit_json("ls", "--shmkit", f"{prefix}*")}
        assert only == {f"{prefix}-seg", f"{prefix}-zone"}
        foreign(f"sem.{prefix}")  # where sem_open keeps a named semaphore
        assert not [r for r in shmkit_json("ls", f"sem.{prefix}")]
        assert [r["name"] for r in shmkit_json("ls", "--all", f"sem.{prefix}")] == [f"sem.{prefix}"]
        text = shmkit("ls", f"{prefix}*", "--bytes", check_code=0).stdout.splitlines()
        assert text[0].split() == ["TYPE", "KEY/NAME", "ID", "OWNER", "PERMS", "BYTES", "NATTCH",
                                   "CPID", "LPID", "STATUS", "LIFECYCLE", "SHMKIT"]
        assert any(line.split()[1] == f"{prefix}-zone" and line.split()[-1] == "zone"
                   for line in text[1:])
        key_line = shmkit("ls", f"0x{sysv_key:08x}", "--bytes",
                          check_code=0).stdout.splitlines()[1].split()
        assert key_line[:6] == ["sysv", f"0x{sysv_key:08x}", str(sv.shmid), key_line[3], "640",
                                "8192"]
        # human-readable sizes unless --bytes
        text = shmkit("ls", f"0x{sysv_key:08x}", check_code=0).stdout.splitlines()
        assert text[0].split()[5] == "SIZE" and text[1].split()[5:7] == ["8.0", "KiB"]
        assert "1.0 MiB" in shmkit("ls", f"{prefix}-z*", check_code=0).stdout
    finally:
        seg.close()
        zone.unlink()
        zone.close()
        sv.unlink()
        sv.close()


# -- info and check -----------------------------------------------------------------------------------

def test_info_of_a_zone_and_a_segment(prefix, sysv_key):
    name = f"{prefix}-zone"
    z = Zone(name, 1 << 20, tag="cli")
    sv = Segment(None, "x", 4096, key=sysv_key)
    try:
        z.create("first", 100)
        z.create("second", 5000)
        d = shmkit_json("info", name)
        assert d["segment"]["kind"] == "zone" and d["segment"]["size"] == 1 << 20
        h, st = d["zone"]["header"], d["zone"]["stats"]
        assert h["magic"] == _core.ZONE_MAGIC and h["state"] == 2 and h["tag"] == "cli"
        assert h["creator_pid"] == os.getpid()
        assert len(st["classes"]) == _core.NCLASSES and st["free_bytes"] > 0
        assert st["classes"][4]["used"] == 1  # "first" lives in the 128-byte class
        objs = {o["name"]: o for o in d["zone"]["objects"]}
        assert objs["first"]["type"] == "raw" and objs["first"]["size"] == 100
        assert objs["second"]["size"] == 5000
        text = shmkit("info", name, check_code=0).stdout
        assert "objects (2)" in text and "second" in text and "CLASS" in text
        d = shmkit_json("info", "--key", hex(sysv_key))
        assert d["segment"]["shmid"] == sv.shmid and "zone" not in d
        d = shmkit_json("info", "--id", str(sv.shmid))
        assert d["segment"]["key"] == sysv_key
        assert shmkit("info", f"{prefix}-missing", check_code=3).stderr
        assert shmkit("info", "--key", "0x7ffffff7", check_code=3).stderr
    finally:
        z.unlink()
        z.close()
        sv.unlink()
        sv.close()


def test_check_ok_corrupted_not_a_zone_missing(prefix):
    name = f"{prefix}-zone"
    with Zone(name, 1 << 20) as z:
        z.create("a", 100)
        assert shmkit_json("check", name) == {"target": f"POSIX segment {name!r}", "ok": True,
                                              "problems": []}
        with Segment(name, "w") as raw:  # a stray write into the allocator's list head
            raw.write(struct.pack("=I", 999999), _core.ZONE_OFF_FREE_HEAD)
        d = shmkit_json("check", name, code=1)
        assert not d["ok"] and any("free list" in p for p in d["problems"])
        r = shmkit("check", name, check_code=1)
        assert "problem(s)" in r.stdout
        z.unlink()
    foreign(f"{prefix}-plain")
    assert "not a shmkit zone" in shmkit("check", f"{prefix}-plain", check_code=1).stderr
    shmkit("check", f"{prefix}-missing", check_code=3)


# -- rm ----------------------------------------------------------------------------------------------

def test_rm_refuses_foreign_and_attached_unless_forced(prefix, sysv_keys, procs):
    foreign(f"{prefix}-foreign")
    r = shmkit("rm", f"{prefix}-foreign", check_code=5)
    assert "not created by shmkit" in r.stderr and os.path.exists(f"/dev/shm/{prefix}-foreign")
    shmkit("rm", "--force", f"{prefix}-foreign", check_code=0)
    assert not os.path.exists(f"/dev/shm/{prefix}-foreign")

    held = Segment(f"{prefix}-held", "x", 100)
    try:
        r = shmkit("rm", f"{prefix}-held", check_code=5)
        assert "still attached" in r.stderr
        r = shmkit("rm", "-f", f"{prefix}-held", check_code=0)
        assert "removed" in r.stdout and held.removed
        held.write(b"still usable")  # removing the name leaves the mapping
    finally:
        held.close()

    idle = Segment(f"{prefix}-idle", "x", 100)
    idle.close()
    k1, k2 = sysv_keys.new(), sysv_keys.new()
    a = Segment(None, "x", 100, key=k1)
    b = Segment(None, "x", 100, key=k2)
    bid = b.shmid
    a.close()
    b.close()
    r = shmkit("rm", f"{prefix}-idle", "--key", hex(k1), "--id", str(bid), check_code=0)
    assert r.stdout.count("removed") == 3
    assert not os.path.exists(f"/dev/shm/{prefix}-idle") and not sysv_exists(k1)
    assert not sysv_exists(k2)
    # partial failure: the worst code wins, the rest is still done
    c = Segment(f"{prefix}-c", "x", 100)
    c.close()
    r = shmkit("rm", f"{prefix}-nope", f"{prefix}-c", check_code=3)
    assert not os.path.exists(f"/dev/shm/{prefix}-c")


# -- gc ----------------------------------------------------------------------------------------------

GC_CHILD = textwrap.dedent("""
    import sys, time
    from shmkit import Segment
    name, mode, lifecycle = sys.argv[1:4]
    if name.startswith("key:"):
        s = Segment(None, mode, 4096, key=int(name[4:]), lifecycle=None if lifecycle == "-" else lifecycle)
    else:
        s = Segment(name, mode, 4096, lifecycle=None if lifecycle == "-" else lifecycle)
    print(s._reaper_pid, flush=True)
    time.sleep(600)
""")


def test_gc_removes_exactly_what_should_go(prefix, sysv_keys, procs):
    def hold(name, mode="x", lifecycle="-"):
        p = spawn_python(GC_CHILD, name, mode, lifecycle)
        procs.append(p)
        return p, int(read_line(p))

    def kill_all(*pids):
        for pid in pids:
            if pid:
                kill_hard(pid)

    P = prefix
    # a) creator gone (and its reaper killed first, so nobody cleaned up): goes
    ca, ra = hold(f"{P}-a", lifecycle="unlink_on_creator_exit")
    kill_all(ra, ca.pid)
    # b) last close, every user and the reaper killed: goes
    cb, rb = hold(f"{P}-b", lifecycle="unlink_on_last_close")
    ab, _ = hold(f"{P}-b", "w")
    kill_all(rb, cb.pid, ab.pid)
    # c) last close, reaper killed but an attacher alive: stays
    cc, rc = hold(f"{P}-c", lifecycle="unlink_on_last_close")
    ac, _ = hold(f"{P}-c", "w")
    kill_all(rc, cc.pid)
    # d) creator exit, creator alive: stays
    cd, rd = hold(f"{P}-d", lifecycle="unlink_on_creator_exit")
    kill_all(rd)
    # e) persist, creator killed: stays
    ce, _ = hold(f"{P}-e", lifecycle="persist")
    kill_all(ce.pid)
    # f) not shmkit's: stays
    foreign(f"{P}-f")
    # g) creator exit, creator and reaper dead, but still mapped by an attacher: stays
    cg, rg = hold(f"{P}-g", lifecycle="unlink_on_creator_exit")
    ag, _ = hold(f"{P}-g", "w")
    kill_all(rg, cg.pid)
    # h) SysV, last close, all killed: goes
    key = sysv_keys.new()
    ch, rh = hold(f"key:{key}", lifecycle="unlink_on_last_close")
    kill_all(rh, ch.pid)
    for p in (ca, cb, ab, cc, ce, cg, ch):
        p.wait(30)

    ls = {r["display_name"]: r for r in shmkit_json("ls", f"{P}-*")}
    assert "stale" in ls[f"{P}-a"]["status"] and "stale" in ls[f"{P}-b"]["status"]
    assert "stale" not in ls[f"{P}-c"]["status"] and "stale" not in ls[f"{P}-d"]["status"]
    assert ls[f"{P}-a"]["creator_alive"] is False and ls[f"{P}-d"]["creator_alive"] is True

    dry = shmkit_json("gc", f"{P}-*", "--dry-run")
    would = {a["target"] for a in dry if a["action"] == "would remove"}
    assert would == {f"{P}-a", f"{P}-b"}
    kept = {a["target"]: a["reason"] for a in dry if a["action"] == "kept"}
    assert "handle is open" in kept[f"{P}-g"] or "mapped" in kept[f"{P}-g"]
    for n in "abcdefg":
        assert os.path.exists(f"/dev/shm/{P}-{n}")  # a dry run removes nothing

    done = shmkit_json("gc", f"{P}-*")
    assert {a["target"] for a in done if a["action"] == "removed"} == {f"{P}-a", f"{P}-b"}
    for n in "ab":
        assert not os.path.exists(f"/dev/shm/{P}-{n}")
    for n in "cdefg":
        assert os.path.exists(f"/dev/shm/{P}-{n}")

    sysv_done = shmkit_json("gc", f"0x{key:08x}")
    assert [a["action"] for a in sysv_done] == ["removed"] and not sysv_exists(key)

    # once the last holder of g dies, g goes too
    kill_all(ag.pid)
    ag.wait(30)
    assert {a["target"] for a in shmkit_json("gc", f"{P}-*")
            if a["action"] == "removed"} == {f"{P}-g"}
    assert shmkit("gc", f"{P}-*", check_code=0).stdout.strip() == "nothing to collect"
    kill_all(ac.pid, cd.pid)


# -- dump ----------------------------------------------------------------------------------------------

def test_dump_hex_and_raw(prefix, sysv_key):
    name = f"{prefix}-d"
    data = bytes(range(256)) + b"hello, dump"
    with Segment(name, "x", len(data)) as s, Segment(None, "x", 64, key=sysv_key) as sv:
        s.write(data)
        sv.write(b"sysv bytes")
        lines = shmkit("dump", name, "--length", "32", check_code=0).stdout.splitlines()
        assert lines == [
            "00000000: 0001 0203 0405 0607 0809 0a0b 0c0d 0e0f  ................",
            "00000010: 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f  ................",
        ]
        tail = shmkit("dump", name, "-s", "0x100", check_code=0).stdout.splitlines()
        assert tail == ["00000100: 6865 6c6c 6f2c 2064 756d 70              hello, dump"]
        raw = subprocess.run([sys.executable, "-m", "shmkit", "dump", name, "--raw", "-s", "65",
                              "-l", "26"], capture_output=True, timeout=60)
        assert raw.returncode == 0 and raw.stdout == bytes(range(65, 91))
        assert shmkit("dump", "--key", str(sysv_key), "--raw", "-l", "10",
                      check_code=0).stdout == "sysv bytes"
        shmkit("dump", name, "-s", "1000", check_code=2)
        shmkit("dump", name, "-s", "260", "-l", "10", check_code=2)
        shmkit("dump", name, "-s", "-1", check_code=2)
        s.unlink()
        sv.unlink()
    shmkit("dump", name, check_code=3)


# -- doctor -----------------------------------------------------------------------------------------------

def test_doctor_reports_the_machine():
    r = shmkit("doctor", "--json")
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    assert (r.returncode == 1) == bool(d["problems"])
    f = d["facts"]
    for limit in ("shmmax", "shmall", "shmmni"):
        with open(f"/proc/sys/kernel/{limit}") as fh:
            assert f["sysv"][limit] == int(fh.read().split()[0])
    v = os.statvfs("/dev/shm")
    assert f["dev_shm"]["size"] == v.f_blocks * v.f_frsize
    assert f["ksm"]["state"] in ("off", "running", "unmerging", "absent")
    assert f["start_method"]["default"] in ("fork", "spawn", "forkserver")
    assert isinstance(f["xattr"], bool) and f["ofd_locks"] is True
    text = shmkit("doctor").stdout
    for word in ("kernel.shmmax", "kernel.shmall", "kernel.shmmni", "/dev/shm", "KSM",
                 "start method", "user xattrs"):
        assert word in text
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(".shmkit-doctor")]


def test_gc_removes_registry_records_whose_segment_is_gone(tmp_path, sysv_key):
    registry = tmp_path / "registry"
    env = dict(os.environ, SHMKIT_REGISTRY=str(registry))
    code = textwrap.dedent(f"""
        from shmkit import Segment
        s = Segment(None, "x", 100, key={sysv_key})
        print(s.shmid)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, check=True)
    shmid = int(r.stdout)
    records = os.listdir(registry)
    assert len(records) == 1 and records[0].startswith(f"sysv-{shmid}-")
    subprocess.run(["ipcrm", "-m", str(shmid)], check=True)  # behind shmkit's back
    # gc without a pattern (the only way it looks at records) would also collect the stale
    # segments of every other test run on this machine: run it in a private mount
    # namespace whose /dev/shm is an empty tmpfs (SysV and the registry stay visible)
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"gc without a pattern needs a private /dev/shm here: {probe.stderr.strip()}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        f"mount -t tmpfs -o size=1m tmpfs /dev/shm && "
                        f"exec {sys.executable} -m shmkit gc --json"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    actions = [a for a in json.loads(r.stdout) if a["what"] == "record"]
    assert [(a["target"], a["action"]) for a in actions] == [(records[0], "removed")]
    assert os.listdir(registry) == []


# -- per object: ls ZONE, info ZONE/OBJECT, rm ZONE/OBJECT ---------------------------------------

OBJECT_HOLDER = textwrap.dedent("""
    import os, sys
    import shmkit
    z = shmkit.Zone(sys.argv[1], 4 << 20)
    q = z.queue("jobs", 1 << 16)
    q.put(b"a"); q.put(b"bb")
    z.lock("held").acquire()
    print(os.getpid(), flush=True)
    sys.stdin.read()
""")


def test_ls_info_rm_of_objects_in_a_zone(prefix, procs):
    name = f"{prefix}-zone"
    holder = subprocess.Popen([sys.executable, "-c", OBJECT_HOLDER, name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(holder)
    pid = int(read_line(holder))
    with Zone(name) as z:
        z.counter("hits").add(7)
        z.create("spare", 3000)
    # ls ZONE: the objects, with what matters
    out = shmkit("ls", name, check_code=0).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert set(lines) == {"jobs", "held", "hits", "spare"}, out
    assert "depth 2" in lines["jobs"] and "1 handle(s)" in lines["jobs"]
    assert f"held by pid {pid}" in lines["held"] and "value 7" in lines["hits"]
    assert "2.9 KiB" in lines["spare"] and "3000" in shmkit("ls", name, "--bytes").stdout
    rows = {o["name"]: o for o in shmkit_json("ls", name)}
    assert rows["jobs"]["type"] == "queue" and rows["jobs"]["statistics"]["depth"] == 2
    assert rows["spare"]["size"] == 3000 and rows["spare"]["statistics"] is None
    # a pattern still lists segments
    assert [r["display_name"] for r in shmkit_json("ls", f"{name}*")] == [name]
    # info ZONE/OBJECT
    d = shmkit_json("info", f"{name}/jobs")
    assert d["zone"] == name and d["type"] == "queue" and d["statistics"]["puts"] == 2
    assert shmkit_json("info", name, "--object", "hits")["statistics"]["value"] == 7
    text = shmkit("info", f"{name}/jobs", check_code=0).stdout
    assert "queue 'jobs'" in text and "depth 2" in text and "64.0 KiB" in text
    assert "65536" in shmkit("info", f"{name}/jobs", "--bytes", check_code=0).stdout
    assert "no object named" in shmkit("info", f"{name}/nope", check_code=3).stderr
    shmkit("info", f"{name}/jobs", "--object", "hits", check_code=2)
    # rm ZONE/OBJECT: refused while a live process may use it, unless forced
    r = shmkit("rm", f"{name}/jobs", check_code=5)
    assert "1 queue handle(s) are open" in r.stderr and "--force" in r.stderr
    r = shmkit("rm", f"{name}/held", check_code=5)
    assert f"held by pid {pid}, which is alive" in r.stderr
    r = shmkit("rm", f"{name}/hits", check_code=5)
    assert "attached by 1 other process" in r.stderr
    shmkit("rm", f"{name}/nope", check_code=3)
    holder.stdin.close()
    holder.wait(30)
    # the holder is gone: nothing uses the zone any more
    r = shmkit("rm", f"{name}/hits", f"{name}/spare", check_code=0)
    assert "removed counter 'hits'" in r.stdout and "removed raw 'spare'" in r.stdout
    # its queue handle died with it (the queue repairs dead members), the lock's holder is dead
    shmkit("rm", f"{name}/held", check_code=0)
    with Zone(name) as z:
        q = z.queue("jobs")
        r = shmkit("rm", f"{name}/jobs", check_code=5)  # ours (and the dead one's, until
        assert "queue handle(s) are open" in r.stderr  # a repair scrubs its slot)
        r = shmkit("rm", "--force", f"{name}/jobs", check_code=0)
        q.detach()
        assert sorted(o.name for o in z.objects()) == []
        z.unlink()

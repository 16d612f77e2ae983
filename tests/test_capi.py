"""The C API (shmkit.h, libshmkit.so) with C programs as real peers of Python processes:
segments, zones, locks and counters; the header's error codes against core/errors.def;
what the library exports; C and C++ programs compiled with the flags docs/c.md gives.

The queue and the dict across C and Python are in tests/test_capi_queue.py and
tests/test_capi_dict.py; the wheel's contents in tests/test_capi_packaging.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

import shmkit
from capi_support import CSRC, ROOT, build, env, facts, need, run
from conftest import kill_hard, run_python, unique, wait_until

HEADER = os.path.join(ROOT, "src", "shmkit", "include", "shmkit.h")
ERRORS_DEF = os.path.join(ROOT, "src", "shmkit", "core", "errors.def")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """tests/capi/peer.c, built with the documented command."""
    return build(os.path.join(CSRC, "peer.c"), str(tmp_path_factory.mktemp("capi")))


@pytest.fixture
def zname():
    """A unique zone/segment name, removed at teardown whoever created it."""
    n = unique("shmkit-capi")
    yield n
    try:
        os.unlink(f"/dev/shm/{n}")
    except FileNotFoundError:
        pass


# -- the header: one list of error codes, only public symbols, C and C++ ------------------------

def _errors_def() -> list[tuple[int, str, str]]:
    out = []
    with open(ERRORS_DEF) as f:
        for m in re.finditer(r'^SHK_ERROR\((-\d+),\s*SHK_(\w+),\s*"([^"]*)"', f.read(), re.M):
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    assert len(out) >= 20
    return out


def _header_codes() -> list[tuple[int, str, str]]:
    with open(HEADER) as f:
        text = f.read()
    return [(int(v), n, t.strip()) for n, v, t in
            re.findall(r"#define SHMKIT_(E(?!RANGE)\w+) \((-\d+)\)\s*/\* (.*?) \*/", text)]


def test_header_error_codes_are_errors_def(peer):
    core = _errors_def()
    header = _header_codes()
    # the same codes, names, values and order, both ways
    assert [(v, n) for v, n, _ in header] == [(v, n) for v, n, _ in core]
    assert [t for _, _, t in header] == [t for _, _, t in core]
    # and shmkit_strerror gives the core's text for each (one table, not a copy)
    out = subprocess.run([peer, "strerror", *[str(v) for v, _, _ in core], "0", "2"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    got = dict(line.split(" ", 1) for line in out.splitlines())
    for v, _, text in core:
        assert got[str(v)] == text
    assert got["0"] == "success" and got["2"] == os.strerror(2)


def _declared_functions() -> set[str]:
    with open(HEADER) as f:
        text = f.read()
    return set(re.findall(r"SHMKIT_API\s+[\w\s\*]*?\b(shmkit_\w+)\s*\(", text))


def test_library_exports_exactly_the_header(peer):
    need("nm")
    lib = os.path.join(shmkit.get_library_dir(), "libshmkit.so")
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.split()[1:2] == ["T"]}
    others = {line.split()[-1] for line in out.splitlines() if line.split()[1:2] != ["T"]}
    assert exported == _declared_functions()
    assert not {s for s in others if not s.startswith(("_", "__"))}, others


def test_shmkit_config_and_pkg_config_agree():
    r = subprocess.run(["shmkit", "config", "--cflags", "--libs"], env=env(), capture_output=True,
                       text=True, check=True)
    flags = r.stdout.split()
    inc, libdir = shmkit.get_include(), shmkit.get_library_dir()
    assert flags == [f"-I{inc}", f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lshmkit"]
    assert os.path.exists(os.path.join(inc, "shmkit.h"))
    assert os.path.exists(os.path.join(libdir, "libshmkit.so"))
    pcdir = subprocess.run(["shmkit", "config", "--pkgconfigdir"], env=env(), capture_output=True,
                           text=True, check=True).stdout.strip()
    assert os.path.exists(os.path.join(pcdir, "shmkit.pc"))
    need("pkg-config")
    e = dict(env(), PKG_CONFIG_PATH=pcdir)
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "shmkit"], env=e, capture_output=True,
                        text=True, check=True).stdout.split()

    def norm(flag):
        for prefix in ("-I", "-L", "-Wl,-rpath,"):
            if flag.startswith(prefix):
                return prefix + os.path.normpath(flag[len(prefix):])
        return flag

    assert [norm(f) for f in pc] == flags               # the relocatable .pc: the same paths
    version = subprocess.run(["pkg-config", "--modversion", "shmkit"], env=e, capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == shmkit.__version__


def test_strict_c_and_cxx_compile_against_the_header(tmp_path):
    """The header is clean C99 and C++11 under -pedantic -Wall -Wextra -Werror, and a C++
    program (extern "C") links and runs."""
    need("cc")
    need("c++")
    flags = subprocess.run(["shmkit", "config", "--cflags", "--libs"], env=env(),
                           capture_output=True, text=True, check=True).stdout.strip()
    for src, compiler in (("strict.c", "cc -std=c99"), ("cxx.cpp", "c++ -std=c++11")):
        cmd = (f"{compiler} -pedantic -Wall -Wextra -Werror -o prog "
               f"{os.path.join(CSRC, src)} {flags}")
        r = subprocess.run(["sh", "-c", cmd], cwd=tmp_path, capture_output=True, text=True,
                           env=env(), timeout=300)
        assert r.returncode == 0, f"{cmd}\n{r.stderr}"
    n = unique("shmkit-capi-cxx")
    try:
        r = subprocess.run([str(tmp_path / "prog"), n], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert facts(r.stdout)["counter"] == "3"
    finally:
        if os.path.exists(f"/dev/shm/{n}"):
            os.unlink(f"/dev/shm/{n}")


def test_cxx_program_builds_with_the_documented_command(tmp_path):
    exe = build(os.path.join(CSRC, "cxx.cpp"), str(tmp_path))
    n = unique("shmkit-capi-cxx")
    try:
        r = subprocess.run([exe, n], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert facts(r.stdout)["counter"] == "3"
    finally:
        if os.path.exists(f"/dev/shm/{n}"):
            os.unlink(f"/dev/shm/{n}")


# -- segments --------------------------------------------------------------------------------------

def test_segment_from_c_read_by_python_and_back(peer, zname):
    f = run(peer, "segment-create", zname, "hello from C")
    assert f == {"created": "1", "size": "4096"}
    seg = shmkit.Segment(zname, "w")
    try:
        assert bytes(seg.buf[:13]) == b"hello from C\0"
        st = seg.stat()
        assert st.shmkit and st.lifecycle == "persist"       # shmkit's record, written by C
        assert st.creator_pid is not None
        seg.write(b"hello from Python\0")
        f = run(peer, "segment-read", zname)
        assert f == {"size": "4096", "text": "hello from Python", "created": "0"}
        # creating it again exclusively fails, and says why
        r = subprocess.run([peer, "segment-create", zname, "x"], capture_output=True, text=True)
        assert r.returncode == 1 and "File exists" in r.stderr
    finally:
        seg.close()
    assert run(peer, "segment-unlink", zname) == {"unlink": "OK"}
    assert not os.path.exists(f"/dev/shm/{zname}")
    assert run(peer, "segment-unlink", zname) == {"unlink": "No such file or directory"}


def test_segment_removed_by_c_is_not_reported_vanished(peer, zname, procs):
    """A Python process still has it mapped when C unlinks it: shmkit marked the removal,
    so inventory does not take it for the resource tracker's doing."""
    from shmkit import inventory
    seg = shmkit.Segment(zname, "x", 4096)
    try:
        assert run(peer, "segment-unlink", zname) == {"unlink": "OK"}
        assert zname not in [v.name for v in inventory.vanished_segments()]
    finally:
        seg.close()


def test_c_attacher_keeps_an_unlink_on_last_close_segment(peer, zname, procs):
    """A C process attached counts as attached: the Python creator's last close does not
    remove the segment while C still has it; C's exit (SIGKILL) lets the reaper do it."""
    seg = shmkit.Segment(zname, "x", 4096, lifecycle="unlink_on_last_close")
    p = subprocess.Popen([peer, "segment-hold", zname], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "attached"
    assert seg.stat().handles == 2
    seg.close()
    assert os.path.exists(f"/dev/shm/{zname}")
    kill_hard(p.pid)
    p.wait(10)
    wait_until(lambda: not os.path.exists(f"/dev/shm/{zname}"), 15,
               what="the reaper to remove the segment after the C attacher died")


# -- zones -------------------------------------------------------------------------------------------

def test_zone_created_by_c_attached_by_python(peer, zname):
    f = run(peer, "zone-open", zname, 1 << 20, "v1", 0)
    assert f == {"created": "1", "init_calls": "1", "size": str(1 << 20)}
    z = shmkit.Zone(zname, 1 << 20, tag="v1")
    try:
        assert not z._core_zone.must_init
        assert z.max_size == 8 << 20
        assert z.counter("made-by-init", create=False).get() == 42
        with pytest.raises(shmkit.ZoneMismatchError, match="1048576"):
            shmkit.Zone(zname, 2 << 20)
        with pytest.raises(shmkit.ZoneMismatchError, match="v1"):
            shmkit.Zone(zname, 1 << 20, tag="v2")
        assert z.check() == []
    finally:
        z.close()
    # C declaring it again: attaches (init not run); mismatches name both
    assert run(peer, "zone-open", zname, 1 << 20, "v1", 0)["created"] == "0"
    assert run(peer, "zone-open", zname, 0, "-", 0)["created"] == "0"
    f = run(peer, "zone-open", zname, 2 << 20, "v1", 0)
    assert f["error"] == str(shmkit._core.E_MISMATCH) and "1048576" in f["detail"]
    f = run(peer, "zone-open", zname, 1 << 20, "v3", 0)
    assert f["error"] == str(shmkit._core.E_MISMATCH) and "'v1'" in f["detail"]


def test_zone_created_by_python_attached_by_c(peer, zname):
    z = shmkit.Zone(zname, 1 << 20, tag="py")
    try:
        f = run(peer, "zone-open", zname, 0, "-", 0)
        assert f == {"created": "0", "init_calls": "0", "size": str(1 << 20)}
        assert run(peer, "zone-open", zname, 1 << 20, "py", 0)["created"] == "0"
    finally:
        z.close()


def test_zone_init_failure_leaves_it_to_the_next_declaration(peer, zname):
    f = run(peer, "zone-open", zname, 1 << 20, "-", 5)     # init returns EIO
    assert f["error"] == "5" and "init" in f["detail"]
    z = shmkit.Zone(zname, 1 << 20)                        # Python initialises it now
    try:
        assert z._core_zone.must_init is False and z.check() == []
    finally:
        z.close()


def test_zone_attach_only_creates_nothing(peer, zname):
    f = run(peer, "zone-open", zname, 0, "-", 0)
    assert int(f["error"]) == 2                            # ENOENT
    assert not os.path.exists(f"/dev/shm/{zname}")


def test_racing_declarations_from_c_and_python_initialise_once(peer, zname, procs):
    code = ("import sys, shmkit\n"
            "made = [0]\n"
            "z = shmkit.Zone(sys.argv[1], 1 << 20, tag='race', max_size=8 << 20,\n"
            "                init=lambda z: made.__setitem__(0, 1))\n"
            "print('created', made[0])\n"
            "print('made', z.counter('made-by-init', 0).get())\n")
    cs = [subprocess.Popen([peer, "zone-open", zname, str(1 << 20), "race", "0"],
                           stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ps = [subprocess.Popen([sys.executable, "-c", code, zname], stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    procs.extend(cs + ps)
    outs = [facts(p.communicate(timeout=120)[0]) for p in cs]
    pouts = [facts(p.communicate(timeout=120)[0]) for p in ps]
    assert all("created" in o for o in outs + pouts), (outs, pouts)
    c_creators = sum(int(o["created"]) for o in outs)
    assert c_creators + sum(int(o["created"]) for o in pouts) == 1, (outs, pouts)
    # if a C process initialised it, its init made the counter (42) before any other
    # process could use the zone; if Python did, nobody ran C's init
    z = shmkit.Zone(zname, 1 << 20, tag="race")
    try:
        made = z.counter("made-by-init", 0).get()
        assert made == (42 if c_creators == 1 else 0)
        assert all(o["made"] == str(made) for o in pouts), pouts
    finally:
        z.close()


# -- locks -------------------------------------------------------------------------------------------

def test_c_lock_holder_sigkilled_is_recovered_by_python_waiter(peer, zname, procs):
    z = shmkit.Zone(zname, 1 << 20)
    try:
        lock = z.lock("guard")
        p = subprocess.Popen([peer, "lock-hold", zname, "guard"], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held OK"
        assert not lock.acquire(timeout=0.05)              # C holds it
        result = {}

        def waiter():
            result["got"] = lock.acquire(timeout=30)
            result["owner_died"] = lock.owner_died
            result["at"] = time.monotonic()

        t = threading.Thread(target=waiter)
        t.start()
        wait_until(lambda: lock.statistics().waiters >= 1, 10,
                   what="the Python waiter to sleep on the lock")
        killed = time.monotonic()
        kill_hard(p.pid)
        p.wait(10)
        t.join(40)
        assert result["got"] is True and result["owner_died"] is True
        assert result["at"] - killed < 5.0                 # about 10 ms, more under load
        assert lock.statistics().owner_deaths == 1
        lock.release()
    finally:
        z.close()


def test_python_lock_holder_sigkilled_is_recovered_by_c(peer, zname, procs):
    z = shmkit.Zone(zname, 1 << 20)
    try:
        code = ("import sys, time, shmkit\n"
                "z = shmkit.Zone(sys.argv[1])\n"
                "l = z.lock('guard'); l.acquire(); print('held', flush=True); time.sleep(600)\n")
        p = subprocess.Popen([sys.executable, "-c", code, zname], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        f = run(peer, "lock-acquire", zname, "guard", 0)
        assert f["result"] == "EBUSY"
        kill_hard(p.pid)
        p.wait(10)
        f = run(peer, "lock-acquire", zname, "guard", 30)
        assert f["result"] == "EOWNERDEAD"
        assert f["release_again"] == "ENOTOWNER"
        f = run(peer, "lock-acquire", zname, "guard", 1)    # a clean acquire again
        assert f["result"] == "OK"
    finally:
        z.close()


def test_c_lock_timeout_is_honoured_under_a_signal_storm(peer, zname):
    """SIGALRM every 500 us (no SA_RESTART) while C waits: the wait neither fails with
    EINTR nor stretches its deadline."""
    z = shmkit.Zone(zname, 1 << 20)
    try:
        lock = z.lock("guard")
        lock.acquire()
        f = run(peer, "lock-acquire", zname, "guard", 0.3, "storm")
        assert f["result"] == "ETIMEDOUT"
        assert 0.3 <= float(f["elapsed"]) < 1.5
        assert int(f["signals"]) > 50                       # the handler really ran meanwhile
        lock.release()
    finally:
        z.close()


def test_c_lock_wait_succeeds_through_a_signal_storm(peer, zname, procs):
    z = shmkit.Zone(zname, 1 << 20)
    try:
        lock = z.lock("guard")
        lock.acquire()
        p = subprocess.Popen([peer, "lock-acquire", zname, "guard", "30", "storm"],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        time.sleep(0.3)
        lock.release()
        f = facts(p.communicate(timeout=60)[0])
        assert f["result"] == "OK" and float(f["elapsed"]) >= 0.25 and int(f["signals"]) > 20
        assert f["release_again"] == "ENOTOWNER"
        assert lock.acquire(timeout=5)                      # C released it
        lock.release()
    finally:
        z.close()


# -- counters -----------------------------------------------------------------------------------------

def test_counter_from_c_and_python_processes_adds_up_exactly(peer, zname, procs):
    n = 200_000
    z = shmkit.Zone(zname, 1 << 20)
    try:
        c = z.counter("hits")
        code = ("import sys, shmkit\n"
                "c = shmkit.Zone(sys.argv[1]).counter('hits')\n"
                "for _ in range(int(sys.argv[2])): c.add(1)\n")
        ps = [subprocess.Popen([peer, "counter-add", zname, "hits", str(n)], stdout=subprocess.PIPE),
              subprocess.Popen([peer, "counter-cas", zname, "hits", str(n)], stdout=subprocess.PIPE),
              subprocess.Popen([sys.executable, "-c", code, zname, str(n)]),
              subprocess.Popen([sys.executable, "-c", code, zname, str(n)])]
        procs.extend(ps)
        for p in ps:
            p.communicate(timeout=240)
            assert p.returncode == 0
        assert c.get() == 4 * n
    finally:
        z.close()

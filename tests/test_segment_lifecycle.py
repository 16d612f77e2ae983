"""Lifecycles under SIGKILL: persist, unlink_on_last_close, unlink_on_creator_exit, for
posix, sysv and file segments, with real processes killed at will; fork children;
openers racing the last closer; the registry fallback when xattrs are refused; no
warnings at interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from shmkit import Segment, Zone
from conftest import kill_hard, run_python, unique
from segment_helpers import (list_records, read_line, spawn_python, sysv_exists,  # noqa: F401
                             sysv_key, sysv_keys, wait_until)

pytestmark = pytest.mark.timeout(120)

OPEN = textwrap.dedent("""
    import os, sys, time
    from shmkit import Segment
    def open_seg(backend, ident, mode, lifecycle=None, size=4096):
        if backend == "posix":
            return Segment(ident, mode, size, lifecycle=lifecycle)
        if backend == "sysv":
            return Segment(None, mode, size, key=int(ident), lifecycle=lifecycle)
        return Segment(path=ident, mode=mode, size=size, lifecycle=lifecycle)
""")

HOLD = OPEN + textwrap.dedent("""
    backend, ident, mode, lifecycle = sys.argv[1:5]
    s = open_seg(backend, ident, mode, None if lifecycle == "-" else lifecycle)
    if s.created:
        s.write(b"creator data", 0)
    print(s._reaper_pid, flush=True)
    time.sleep(600)
""")


@pytest.fixture(params=["posix", "sysv", "file"])
def target(request, name, sysv_keys, tmp_path):
    """(backend, ident) of a segment that does not exist yet; removed at teardown."""
    backend = request.param
    if backend == "posix":
        yield backend, name
    elif backend == "sysv":
        yield backend, str(sysv_keys.new())
    else:
        path = str(tmp_path / "seg")
        yield backend, path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def exists(backend, ident) -> bool:
    if backend == "posix":
        return os.path.exists(f"/dev/shm/{ident}")
    if backend == "sysv":
        return sysv_exists(int(ident))
    return os.path.exists(ident)


def create_here(backend, ident, lifecycle):
    if backend == "posix":
        return Segment(ident, "x", 4096, lifecycle=lifecycle)
    if backend == "sysv":
        return Segment(None, "x", 4096, key=int(ident), lifecycle=lifecycle)
    return Segment(path=ident, mode="x", size=4096, lifecycle=lifecycle)


def attach_here(backend, ident, mode="w"):
    if backend == "posix":
        return Segment(ident, mode)
    if backend == "sysv":
        return Segment(None, mode, key=int(ident))
    return Segment(path=ident, mode=mode)


def start(procs, backend, ident, mode, lifecycle="-"):
    p = spawn_python(HOLD, backend, ident, mode, lifecycle)
    procs.append(p)
    return p, int(read_line(p))


def killed(p):
    kill_hard(p.pid)
    p.wait(30)


def stays(backend, ident, seconds=0.3) -> bool:
    """Still there after a while (the reaper, if any, had time to act)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not exists(backend, ident):
            return False
        time.sleep(0.01)
    return exists(backend, ident)


def cleanup(backend, ident):
    if exists(backend, ident):
        try:
            s = attach_here(backend, ident)
            s.unlink()
            s.close()
        except OSError:
            pass


# -- persist ---------------------------------------------------------------------------------

def test_persist_survives_sigkill_of_creator_and_attachers(target, procs):
    backend, ident = target
    try:
        creator, reaper = start(procs, backend, ident, "x", "persist")
        assert reaper == 0  # persist needs no reaper
        attacher, _ = start(procs, backend, ident, "w")
        killed(attacher)
        killed(creator)
        assert stays(backend, ident)
        with attach_here(backend, ident) as s:
            assert s.read(0, 12) == b"creator data" and s.lifecycle == "persist"
    finally:
        cleanup(backend, ident)


# -- unlink_on_last_close ------------------------------------------------------------------------

def test_last_close_survives_creator_kill_then_goes_with_last_attacher(target, procs):
    backend, ident = target
    try:
        creator, reaper = start(procs, backend, ident, "x", "unlink_on_last_close")
        assert reaper > 0
        attacher, _ = start(procs, backend, ident, "w")
        killed(creator)
        assert stays(backend, ident)  # an attacher is still there
        with attach_here(backend, ident) as mine:
            assert mine.lifecycle == "unlink_on_last_close"
            killed(attacher)
            assert stays(backend, ident, 0.2)  # we are still attached
            assert mine.read(0, 12) == b"creator data"
        # our close was the last: removed synchronously
        assert not exists(backend, ident)
    finally:
        cleanup(backend, ident)


def test_last_close_reaper_acts_when_every_user_is_killed(target, procs):
    backend, ident = target
    try:
        creator, _ = start(procs, backend, ident, "x", "unlink_on_last_close")
        a1, _ = start(procs, backend, ident, "w")
        a2, _ = start(procs, backend, ident, "w")
        killed(a1)
        killed(creator)
        assert stays(backend, ident)
        killed(a2)  # the last user dies: nobody closes anything, the reaper removes it
        wait_until(lambda: not exists(backend, ident), 10, what="the reaper to remove it")
    finally:
        cleanup(backend, ident)


def test_last_close_in_process_order(target):
    backend, ident = target
    try:
        c = create_here(backend, ident, "unlink_on_last_close")
        a = attach_here(backend, ident)
        r = attach_here(backend, ident, "r")  # read-only handles count too
        c.close()
        a.close()
        assert exists(backend, ident)
        r.close()  # the last one (read-only: the reaper may finish the job)
        wait_until(lambda: not exists(backend, ident), 10, what="removal after the last close")
    finally:
        cleanup(backend, ident)


# A process that wants LOCKBYTE_ATTACH's write lock and asks for it again and again (a
# reaper that is granted it the moment the lock is free, only faster than a real one).
EAGER = textwrap.dedent("""
    import fcntl, os, sys, time
    from shmkit import _core
    fd = os.open(sys.argv[1], os.O_RDWR)
    print("asking", flush=True)
    lock, deadline, got = _core.ofd_lock, time.monotonic() + 10, False
    while not got and time.monotonic() < deadline:
        for _ in range(1000):  # no clock between tries: the window it looks for is ~1 us
            got = lock(fd, _core.LOCKBYTE_ATTACH, fcntl.F_WRLCK, False)
            if got:
                break
    print("got" if got else "never", flush=True)
""")


def test_last_close_removes_before_close_returns(target, procs):
    """The last writable handle removes the name itself, before its close() returns, even
    while another open file description keeps asking for the write lock (as the reaper
    does): its read lock becomes the write lock in one step, never released in between."""
    backend, ident = target
    try:
        for _ in range(8):
            c = create_here(backend, ident, "unlink_on_last_close")
            lock_fd = c._record_fd if backend == "sysv" else c.fd
            eager = spawn_python(EAGER, f"/proc/{os.getpid()}/fd/{lock_fd}")  # its own OFD
            procs.append(eager)
            assert read_line(eager) == "asking"
            a = attach_here(backend, ident)
            a.close()
            assert exists(backend, ident)
            c.close()
            assert not exists(backend, ident), "the name outlived the last close"
            assert read_line(eager) == "got"  # once our handle had gone
            eager.wait(30)
    finally:
        cleanup(backend, ident)


def test_views_keep_a_last_close_segment(name):
    s = Segment(name, "x", 4096, lifecycle="unlink_on_last_close")
    v = s.buf[:8]
    s.close()
    assert stays("posix", name, 0.2)  # still mapped through the view
    v.release()
    wait_until(lambda: not exists("posix", name), 10, what="removal once the view is gone")


# -- unlink_on_creator_exit ---------------------------------------------------------------------

def test_creator_exit_attacher_kill_keeps_it_creator_kill_removes_it(target, procs):
    backend, ident = target
    try:
        creator, reaper = start(procs, backend, ident, "x", "unlink_on_creator_exit")
        assert reaper > 0
        attacher, _ = start(procs, backend, ident, "w")
        killed(attacher)
        assert stays(backend, ident)
        with attach_here(backend, ident) as mine:
            killed(creator)
            wait_until(lambda: not exists(backend, ident), 10,
                       what="removal after the creator was killed")
            # unlinking removed the name only: our mapping is intact
            assert mine.read(0, 12) == b"creator data" and mine.removed
    finally:
        cleanup(backend, ident)


def test_creator_exit_on_close_and_on_normal_exit(target):
    backend, ident = target
    try:
        code = OPEN + textwrap.dedent("""
            s = open_seg(sys.argv[1], sys.argv[2], "x", "unlink_on_creator_exit")
            # exits without closing: the exit hook (or the reaper) removes it
        """)
        run_python(code, backend, ident)
        wait_until(lambda: not exists(backend, ident), 10, what="removal at creator exit")
        if backend == "posix":
            s = Segment(ident, "x", 100, lifecycle="unlink_on_creator_exit")
        elif backend == "sysv":
            s = Segment(None, "x", 100, key=int(ident), lifecycle="unlink_on_creator_exit")
        else:
            s = Segment(path=ident, mode="x", size=100, lifecycle="unlink_on_creator_exit")
        other = attach_here(backend, ident)
        s.close()
        assert not exists(backend, ident)  # synchronously, even though `other` is attached
        other.close()
    finally:
        cleanup(backend, ident)


def test_fork_child_of_creator_is_not_the_creator(name, procs):
    code = textwrap.dedent("""
        import os, sys, time
        from shmkit import Segment
        s = Segment(sys.argv[1], "x", 4096, lifecycle="unlink_on_creator_exit")
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(600)
    """)
    p = spawn_python(code, name)
    procs.append(p)
    child = int(read_line(p))
    try:
        assert stays("posix", name, 0.2)
        killed(p)  # the creator dies; its fork child (holding the mapping) lives on
        wait_until(lambda: not exists("posix", name), 10, what="removal at creator death")
    finally:
        kill_hard(child)


def test_fork_child_counts_as_attached(name):
    s = Segment(name, "x", 4096, lifecycle="unlink_on_last_close")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait for the parent to close
        os._exit(0 if os.path.exists(f"/dev/shm/{name}") else 1)
    os.close(r)
    try:
        # the child takes its own attach lock in its at-fork handler: give it the moment
        wait_until(lambda: s.stat().handles == 2, 10, what="the fork child's attach lock")
        s.close()
        assert exists("posix", name)  # the child still has it
    finally:
        os.write(w, b"x")
        os.close(w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_until(lambda: not exists("posix", name), 10, what="removal after the child exit")


# -- races between openers and the last closer -----------------------------------------------------

def test_open_never_returns_a_removed_segment(name, procs):
    """Processes open and close a last-close segment in a tight loop: whenever a handle
    is open, the name refers to it (never to a removed object), and at the end it is
    gone."""
    code = textwrap.dedent("""
        import sys
        from shmkit import Segment
        bad = 0
        for i in range(300):
            s = Segment(sys.argv[1], "c", 4096, lifecycle="unlink_on_last_close")
            if s.removed:
                bad += 1
            s.buf[0] = (s.buf[0] + 1) % 256
            s.close()
        print(bad, flush=True)
    """)
    ps = [spawn_python(code, name) for _ in range(3)]
    procs.extend(ps)
    assert [read_line(p, 90) for p in ps] == ["0", "0", "0"]
    for p in ps:
        p.wait(30)
    wait_until(lambda: not exists("posix", name), 10, what="the last close to remove it")


# -- contracts ----------------------------------------------------------------------------------

def test_lifecycle_is_the_creators(name, sysv_key):
    with Segment(name, "x", 100, lifecycle="unlink_on_creator_exit") as s:
        with pytest.raises(ValueError, match="unlink_on_creator_exit.*asking for 'persist'"):
            Segment(name, "w", lifecycle="persist")
        with Segment(name, "w", lifecycle="unlink_on_creator_exit") as t:
            assert t.lifecycle == "unlink_on_creator_exit"
        with Segment(name, "c", 100) as t:
            assert t.lifecycle == "unlink_on_creator_exit"
    assert not exists("posix", name)
    with pytest.raises(ValueError, match="no name"):
        Segment(None, "c", 100, backend="memfd", lifecycle="persist")


def test_zone_lifecycle(name, procs):
    code = textwrap.dedent("""
        import sys, time
        from shmkit import Zone
        z = Zone(sys.argv[1], 1 << 20, lifecycle="unlink_on_creator_exit")
        z.create("x", 64)
        print(z.segment._reaper_pid, flush=True)
        time.sleep(600)
    """)
    p = spawn_python(code, name)
    procs.append(p)
    read_line(p)
    z = Zone(name, 0)
    try:
        assert z.segment.lifecycle == "unlink_on_creator_exit" and "x" in z
        killed(p)
        wait_until(lambda: not exists("posix", name), 10, what="the zone's removal")
        assert "x" in z  # still usable here
    finally:
        z.close()


def test_registry_fallback_when_xattrs_are_refused(name, tmp_path, monkeypatch, procs):
    registry = tmp_path / "registry"
    env = {"SHMKIT_XATTR": "0", "SHMKIT_REGISTRY": str(registry)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = spawn_python(HOLD, "posix", name, "x", "unlink_on_creator_exit", env=env)
    procs.append(p)
    assert int(read_line(p)) > 0
    assert not [a for a in os.listxattr(f"/dev/shm/{name}") if a.startswith("user.shmkit")]
    records = os.listdir(registry)
    assert len(records) == 1 and records[0].startswith("posix-")
    with Segment(name, "w") as s:
        st = s.stat()
        assert st.lifecycle == "unlink_on_creator_exit" and st.creator_pid == p.pid
        killed(p)
        wait_until(lambda: not exists("posix", name), 10, what="removal by the reaper")
    assert os.listdir(registry) == []  # the record went with the segment


def test_no_warnings_or_output_at_interpreter_exit(name, sysv_key, tmp_path):
    code = textwrap.dedent(f"""
        from shmkit import Segment, Zone
        keep = [Segment({name!r} + "-a", "x", 100),
                Segment({name!r} + "-b", "x", 100, lifecycle="unlink_on_last_close"),
                Segment({name!r} + "-c", "x", 100, lifecycle="unlink_on_creator_exit"),
                Segment(None, "x", 100, key={sysv_key}, lifecycle="unlink_on_last_close"),
                Segment(path={str(tmp_path / "f")!r}, mode="x", size=100,
                        lifecycle="unlink_on_creator_exit"),
                Segment(None, "c", 100, backend="memfd"),
                Zone({name!r} + "-z", 1 << 20, lifecycle="unlink_on_last_close")]
        view = keep[0].buf  # a view still alive at exit
    """)
    try:
        r = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", code],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
        assert os.path.exists(f"/dev/shm/{name}-a")  # persist
        for gone in ("-b", "-c", "-z"):
            wait_until(lambda: not os.path.exists(f"/dev/shm/{name}{gone}"), 10,
                       what=f"{gone} removed at exit")
        wait_until(lambda: not sysv_exists(sysv_key), 10, what="the sysv one removed")
        assert not (tmp_path / "f").exists()
    finally:
        for sfx in ("-a", "-b", "-c", "-z"):
            try:
                os.unlink(f"/dev/shm/{name}{sfx}")
            except FileNotFoundError:
                pass

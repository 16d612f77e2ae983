"""shmkit.Segment: every backend, modes, bad input, security, attributes, space
reservation, and writer/reader pairs in different processes (spawn, forkserver, fork,
plain subprocess)."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

import shmkit
from shmkit import (ClosedError, InvalidArgumentError, InvalidNameError, NoSpaceError, Segment,
                    SegmentExistsError, SegmentNotFoundError, SegmentPermissionError)
from conftest import run_python, unique
from segment_helpers import (read_line, spawn_python, sysv_exists, sysv_key,  # noqa: F401
                             sysv_keys, wait_until)

pytestmark = pytest.mark.timeout(120)


# -- basics per backend ----------------------------------------------------------------------

def test_posix_create_write_read_reopen(name):
    with Segment(name, "x", 4096) as s:
        assert s.created and s.size == 4096 and s.backend == "posix"
        assert s.write(b"hello", 10) == 5
        assert s.read(10, 5) == b"hello"
        assert bytes(s.buf[10:15]) == b"hello"
        st = os.stat(f"/dev/shm/{name}")
        assert stat.S_IMODE(st.st_mode) == 0o600
        with Segment(name, "w") as t:
            assert not t.created and t.read(10, 5) == b"hello"
            t.write(b"HE", 10)
        assert s.read(10, 5) == b"HEllo"
        with Segment.open(name, readonly=True) as r:
            assert r.readonly and r.read(10, 2) == b"HE"
            with pytest.raises(PermissionError):
                r.write(b"x")
            with pytest.raises(TypeError):
                r.buf[0] = 1
        s.unlink()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_leading_slash_is_the_same_name(name):
    with Segment("/" + name, "x", 100) as s:
        assert s.name == name
        with Segment(name, "w") as t:
            assert t.size == 100
        s.unlink()


def test_sysv_create_open_by_key_and_id(sysv_key):
    with Segment(None, "x", 8192, key=sysv_key) as s:  # backend inferred from key=
        assert s.backend == "sysv" and s.size == 8192 and s.shmid >= 0
        s.write(b"sysv!", 0)
        with Segment(key=sysv_key, mode="r") as r:
            assert r.read(0, 5) == b"sysv!" and r.readonly
        with Segment(shmid=s.shmid, mode="w") as w:
            w.write(b"S", 0)
        assert s.read(0, 5) == b"Sysv!"
        with pytest.raises(SegmentExistsError):
            Segment(None, "x", 8192, key=sysv_key)
        with pytest.raises(InvalidArgumentError, match="smaller than the 1048576 bytes") as ei:
            Segment(None, "c", 1 << 20, key=sysv_key)
        assert ei.value.errno == errno.EINVAL and isinstance(ei.value, ValueError)
        s.unlink()
        assert s.removed
    assert not sysv_exists(sysv_key)


def test_sysv_key_from_ftok_matches_c(tmp_path):
    p = tmp_path / "anchor"
    p.write_text("x")
    st = os.stat(p)
    expected = ((ord("P") & 0xff) << 24) | ((st.st_dev & 0xff) << 16) | (st.st_ino & 0xffff)
    expected = expected - (1 << 32) if expected >= (1 << 31) else expected
    assert shmkit.ftok(p, ord("P")) == expected
    with pytest.raises(FileNotFoundError):
        shmkit.ftok(tmp_path / "missing", 1)


def test_file_backend(tmp_path):
    path = tmp_path / "seg.bin"
    with Segment(path=path, mode="x", size=10000) as s:
        assert s.backend == "file"
        s.write(b"on disk", 5000)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        s.resize(20000)
        assert s.size == 20000 and os.path.getsize(path) == 20000
    with open(path, "rb") as f:
        f.seek(5000)
        assert f.read(7) == b"on disk"
    with Segment(path=path, mode="w") as s:
        assert s.read(5000, 7) == b"on disk"
        s.unlink()
    assert not path.exists()


def test_memfd_backend_and_seals():
    with Segment("label", "c", 4096, backend="memfd") as s:
        assert s.backend == "memfd" and s.fd >= 0
        s.write(b"memfd")
        s.resize(8192)
        assert s.size == 8192
        assert os.readlink(f"/proc/self/fd/{s.fd}").startswith("/memfd:label")
    with Segment(None, "c", 4096, backend="memfd", seals=("grow", "shrink")) as s:
        with pytest.raises(SegmentPermissionError):
            s.resize(8192)
    with Segment(None, "c", 4096, backend="memfd", seals=("write",)) as s:
        assert s.readonly
    with pytest.raises(ValueError, match="unknown seal"):
        Segment(None, "c", 4096, backend="memfd", seals=("glue",))


def test_anonymous_shared_with_fork_child():
    with Segment(None, "c", 4096, backend="anonymous") as s:
        pid = os.fork()
        if pid == 0:
            try:
                s.write(b"from child", 0)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert s.read(0, 10) == b"from child"
        with pytest.raises(TypeError, match="fork"):
            pickle.dumps(s)
        with pytest.raises(ValueError, match="no name"):
            s.unlink()


def test_posix_resize_followed_by_other_handles(name):
    with Segment(name, "x", 4096, reserve=1 << 20) as s, \
            Segment(name, "w", reserve=1 << 20) as t, Segment(name, "w") as fixed:
        s.resize(65536)
        assert t.size == 65536  # follows the growth, in place, within its reservation
        t.write(b"end", 65533)
        assert s.read(65533) == b"end"
        assert fixed.size == 4096  # no reservation: keeps the mapping it has, safely
        with pytest.raises(IndexError):
            fixed.read(65533, 3)
        s.unlink()


# -- modes ---------------------------------------------------------------------------------------

def test_modes_and_shmop_letters(name):
    with pytest.raises(SegmentNotFoundError):
        Segment(name, "w")
    with pytest.raises(SegmentNotFoundError):
        Segment(name, "a")  # shmop's read-only access
    with Segment(name, "n", 100) as s:  # shmop's create-new
        with pytest.raises(SegmentExistsError):
            Segment(name, "x", 100)
        with Segment(name, "c", 100) as t:  # create-or-open opens
            assert not t.created
        with Segment(name, "c") as t:  # no size: open only
            assert t.size == 100
        s.unlink()
    assert not os.path.exists(f"/dev/shm/{name}")
    with Segment(name, "c") if False else Segment(name, "c", 64) as s:
        assert s.created
        s.unlink()


def test_opening_existing_with_too_large_size_is_an_error(name):
    with Segment(name, "x", 100) as s:
        with pytest.raises(InvalidArgumentError, match="smaller than the 200 bytes") as ei:
            Segment(name, "c", 200)
        assert ei.value.errno == errno.EINVAL
        s.unlink()


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, exc", [
    ("", InvalidNameError), ("/", InvalidNameError), ("a/b", InvalidNameError),
    ("x" * 251, InvalidNameError), ("nul\0", InvalidNameError), (".", InvalidNameError),
    ("..", InvalidNameError), (42, TypeError), (b"bytes", TypeError),
])
def test_bad_names(bad, exc):
    with pytest.raises(exc):
        Segment(bad, "x", 100)


@pytest.mark.parametrize("kw, exc, match", [
    ({"size": 0, "mode": "x"}, ValueError, "size must be > 0"),
    ({"size": -1, "mode": "x"}, ValueError, ">= 0"),
    ({"size": 1.5, "mode": "x"}, TypeError, "int"),
    ({"size": 10, "mode": "q"}, ValueError, "unknown mode"),
    ({"size": 10, "mode": "x", "backend": "nfs"}, ValueError, "unknown backend"),
    ({"size": 10, "mode": "x", "perm": 0o4777}, ValueError, "permission bits"),
    ({"size": 10, "mode": "x", "lifecycle": "forever"}, ValueError, "unknown lifecycle"),
])
def test_bad_arguments(name, kw, exc, match):
    with pytest.raises(exc, match=match):
        Segment(name, **kw)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_bad_sysv_arguments():
    with pytest.raises(TypeError, match="int"):
        Segment(None, "x", 100, backend="sysv", key="12")
    with pytest.raises(ValueError, match="32 bits"):
        Segment(None, "x", 100, backend="sysv", key=1 << 40)
    with pytest.raises(ValueError, match="IPC_PRIVATE"):
        Segment(None, "w", backend="sysv", key=0)
    with pytest.raises(TypeError, match="needs a key"):
        Segment(None, "x", 100, backend="sysv")


def test_out_of_range_and_closed(name):
    s = Segment(name, "x", 100)
    try:
        for args in [(101, 0), (-1, 5), (50, 51), (0, -1)]:
            with pytest.raises(IndexError):
                s.read(*args)
        with pytest.raises(IndexError):
            s.write(b"x" * 101)
        with pytest.raises(IndexError):
            s.write(b"xy", 99)
        with pytest.raises(IndexError):
            s.write(b"x", -1)
        with pytest.raises(TypeError):
            s.read("0", 1)
        with pytest.raises(ValueError):
            s.resize(0)
    finally:
        s.unlink()
        s.close()
    for op in (lambda: s.read(0, 1), lambda: s.write(b"x"), lambda: s.buf, lambda: s.size,
               lambda: s.stat(), lambda: s.resize(10), lambda: s.fd):
        with pytest.raises(ClosedError):
            op()
    s.close()  # twice is fine


def test_view_outlives_close_and_stays_valid(name):
    s = Segment(name, "x", 4096)
    v = s.buf[0:16]
    s.write(b"kept alive", 0)
    s.unlink()
    s.close()
    assert bytes(v[:10]) == b"kept alive"  # the mapping lives as long as the view
    v.release()


def test_sysv_fixed_size_and_anonymous_fixed_size(sysv_key):
    with Segment(None, "x", 4096, key=sysv_key) as s:
        with pytest.raises(OSError):
            s.resize(8192)
        s.unlink()


# -- security -----------------------------------------------------------------------------------

def test_default_mode_is_0600_and_perm_is_exact(name, sysv_key):
    old = os.umask(0)
    try:
        with Segment(name, "x", 100) as s:
            assert stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode) == 0o600
            s.unlink()
    finally:
        os.umask(old)
    old = os.umask(0o077)  # the umask must not narrow an explicit perm either
    try:
        with Segment(name, "x", 100, perm=0o640) as s:
            assert stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode) == 0o640
            s.unlink()
    finally:
        os.umask(old)
    with Segment(None, "x", 100, key=sysv_key) as s:
        assert s.stat().mode == 0o600
        s.unlink()


def test_file_backend_refuses_symlinks(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"\0" * 100)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError) as ei:
        Segment(path=link, mode="w")
    assert ei.value.errno == errno.ELOOP and "symbolic link" in str(ei.value)
    with pytest.raises(OSError):
        Segment(path=link, mode="c", size=100)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError):
        Segment(path=dangling, mode="c", size=100)
    assert not (tmp_path / "nowhere").exists()  # never created through the link


def test_other_owner_refused_unless_allowed(name, sysv_key, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a segment to another user")
    with Segment(name, "x", 100, perm=0o666) as s:
        os.fchown(s.fd, 65534, 65534)
        with pytest.raises(SegmentPermissionError, match="owned by uid 65534"):
            Segment(name, "w")
        with Segment(name, "w", allow_other_owner=True) as t:
            assert t.size == 100
        s.unlink()
    path = tmp_path / "f"
    with Segment(path=path, mode="x", size=100) as s:
        os.chown(path, 65534, 65534)
        with pytest.raises(SegmentPermissionError):
            Segment(path=path, mode="w")
        s.unlink()
    with Segment(None, "x", 100, key=sysv_key, perm=0o666) as s:
        # a SysV segment cannot be given away from Python: check from a child that has
        # become another user instead
        code = textwrap.dedent(f"""
            import os
            from shmkit import Segment, SegmentPermissionError  # imported while root
            os.setgid(65534); os.setuid(65534)
            try:
                Segment(None, "w", backend="sysv", key={sysv_key})
            except SegmentPermissionError as e:
                print("refused", e)
            s = Segment(None, "w", backend="sysv", key={sysv_key}, allow_other_owner=True)
            print("allowed", s.size)
        """)
        r = run_python(code)
        assert "refused" in r.stdout and "owned by uid 0" in r.stdout
        assert "allowed 100" in r.stdout
        s.unlink()


def test_exclusive_create_is_atomic_across_processes(name, procs):
    """Many processes race to create the same name exclusively: exactly one wins."""
    code = textwrap.dedent("""
        import sys
        from shmkit import Segment, SegmentExistsError
        try:
            s = Segment(sys.argv[1], "x", 4096)
            print("won", flush=True)
        except SegmentExistsError:
            print("lost", flush=True)
    """)
    ps = [subprocess.Popen([sys.executable, "-c", code, name], stdout=subprocess.PIPE,
                           text=True) for _ in range(6)]
    procs.extend(ps)
    results = [p.communicate(timeout=60)[0].strip() for p in ps]
    assert sorted(results) == ["lost"] * 5 + ["won"]


# -- attributes ----------------------------------------------------------------------------------

def test_stat_posix(name, procs):
    with Segment(name, "x", 5000, perm=0o640) as s:
        st = s.stat()
        assert st.backend == "posix" and st.name == name and st.size == 5000
        assert st.uid == os.geteuid() and st.gid == os.getegid() and st.mode == 0o640
        assert st.creator_pid == os.getpid() and st.last_pid == os.getpid()
        assert st.lifecycle == "persist" and st.shmkit and st.creator_alive
        assert st.attach_count == 1 and st.handles == 1 and not st.removed
        assert st.attach_time and st.detach_time is None and st.change_time
        p = spawn_python("import sys, time; from shmkit import Segment\n"
                         "s = Segment(sys.argv[1], 'w'); print(s.stat().creator_pid, flush=True)\n"
                         "time.sleep(60)", name)
        procs.append(p)
        assert int(read_line(p)) == os.getpid()
        st2 = s.stat()
        assert st2.attach_count == 2 and st2.handles == 2 and st2.last_pid == p.pid
        p.kill()
        p.wait()
        wait_until(lambda: s.stat().handles == 1, what="the killed attacher's lock to go")
        assert s.stat().attach_count == 1
        s.unlink()
        assert s.stat().removed
    with pytest.raises(ClosedError):
        s.stat()


def test_stat_sysv(sysv_key):
    with Segment(None, "x", 5000, key=sysv_key, perm=0o644) as s:
        st = s.stat()
        assert st.backend == "sysv" and st.key == sysv_key and st.shmid == s.shmid
        assert st.size == 5000 and st.mode == 0o644 and st.uid == os.geteuid()
        assert st.creator_pid == os.getpid() and st.last_pid == os.getpid()
        assert st.attach_count == 1 and st.lifecycle == "persist" and st.shmkit
        assert st.attach_time and st.change_time and not st.removed
        with Segment(key=sysv_key, mode="r") as r:
            assert s.stat().attach_count == 2 and s.stat().handles == 2
        after = s.stat()
        assert after.attach_count == 1 and after.detach_time
        s.unlink()
        st = s.stat()
        assert st.removed and st.key == 0  # the kernel makes a removed key private


def test_stat_memfd_and_anonymous():
    with Segment(None, "c", 4096, backend="memfd") as s:
        st = s.stat()
        assert st.backend == "memfd" and st.size == 4096 and st.creator_pid == os.getpid()
        assert st.lifecycle == "unlink_on_last_close"
    with Segment(None, "c", 4096, backend="anonymous") as s:
        assert s.stat().size == 4096


def test_foreign_segment_has_no_shmkit_record(name):
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    with Segment(name, "w") as s:
        st = s.stat()
        assert not st.shmkit and st.lifecycle is None and st.creator_pid is None
        assert s.lifecycle is None
        # opening a foreign segment leaves no trace on it
        assert not [a for a in os.listxattr(f"/dev/shm/{name}") if a.startswith("user.shmkit")]
        with pytest.raises(ValueError, match="not created by shmkit"):
            Segment(name, "w", lifecycle="unlink_on_last_close")
        s.unlink()


# -- space is reserved at creation -----------------------------------------------------------------

def test_no_space_on_small_tmpfs_names_asked_and_free(small_tmpfs):
    path = small_tmpfs / "big"
    with pytest.raises(NoSpaceError) as ei:
        Segment(path=path, mode="x", size=4 << 20)
    msg = str(ei.value)
    assert str(4 << 20) in msg and "free" in msg
    free = int(msg.split("only ")[1].split(" bytes")[0])
    assert 0 < free <= 1 << 20
    assert not path.exists()  # nothing left behind


def test_reserved_space_means_no_sigbus(small_tmpfs):
    """A segment's pages are allocated at creation: filling the rest of the file system
    afterwards cannot make a write into the segment die of SIGBUS."""
    path = small_tmpfs / "seg"
    size = 512 << 10
    with Segment(path=path, mode="x", size=size) as s:
        fd = os.open(small_tmpfs / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
        try:  # take every remaining byte
            while True:
                os.write(fd, b"\xff" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        assert os.statvfs(small_tmpfs).f_bavail == 0
        code = textwrap.dedent("""
            import sys
            from shmkit import Segment
            s = Segment(path=sys.argv[1], mode="w")
            n = s.size
            for off in range(0, n, 4096):
                s.buf[off] = 0x5a
            s.buf[n - 1] = 0x5a
            print("wrote", n)
        """)
        r = run_python(code, str(path), check=False)
        assert r.returncode == 0, (r.returncode, r.stderr)  # -7 would be SIGBUS
        assert f"wrote {size}" in r.stdout
        assert s.read(4096, 1) == b"\x5a"
        # growing beyond the free space fails cleanly and leaves the size unchanged
        with pytest.raises(NoSpaceError, match="free"):
            s.resize(size * 4)
        assert s.size == size and os.path.getsize(path) == size


def test_posix_larger_than_dev_shm_fails_cleanly(name):
    free = os.statvfs("/dev/shm")
    total = free.f_blocks * free.f_frsize
    with pytest.raises(NoSpaceError) as ei:
        Segment(name, "x", total * 2)
    assert str(total * 2) in str(ei.value) and "free" in str(ei.value)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_sysv_limits_are_named_with_values(sysv_key):
    with pytest.raises(NoSpaceError) as ei:
        Segment(None, "x", 1 << 62, key=sysv_key)
    msg = str(ei.value)
    for limit in ("shmmax", "shmall", "shmmni"):
        with open(f"/proc/sys/kernel/{limit}") as f:
            value = f.read().split()[0]
        assert f"kernel.{limit} = {value}" in msg
    assert str(1 << 62) in msg
    assert not sysv_exists(sysv_key)


# -- across processes: one writes, another reads -------------------------------------------------

def _child_read_and_reply(seg, expected, reply):
    got = seg.read(0, len(expected))
    seg.write(reply, 100)
    seg.close()
    if got != expected:
        raise SystemExit(3)


def _make(backend, name, tmp_path, keys):
    if backend == "posix":
        return Segment(name, "x", 4096)
    if backend == "sysv":
        return Segment(None, "x", 4096, key=keys.new())
    if backend == "file":
        return Segment(path=tmp_path / "seg", mode="x", size=4096)
    if backend == "memfd":
        return Segment("pair", "c", 4096, backend="memfd")
    return Segment(None, "c", 4096, backend="anonymous")


@pytest.mark.parametrize("backend", ["posix", "sysv", "file", "memfd", "anonymous"])
def test_writer_and_reader_in_other_process(backend, ctx, name, tmp_path, sysv_keys, procs):
    if backend == "anonymous" and ctx.get_start_method() != "fork":
        pytest.skip("anonymous segments are shared with fork children only")
    seg = _make(backend, name, tmp_path, sysv_keys)
    try:
        msg = f"{backend} via {ctx.get_start_method()}".encode()
        seg.write(msg, 0)
        p = ctx.Process(target=_child_read_and_reply, args=(seg, msg, b"reply:" + msg))
        procs.append(p)
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert seg.read(100, 6 + len(msg)) == b"reply:" + msg
    finally:
        if backend in ("posix", "sysv", "file"):
            seg.unlink()
        seg.close()


@pytest.mark.parametrize("backend", ["posix", "sysv", "file"])
def test_writer_and_reader_plain_subprocess(backend, name, tmp_path, sysv_key):
    if backend == "posix":
        seg, ident = Segment(name, "x", 4096), f"Segment({name!r}, 'w')"
    elif backend == "sysv":
        seg, ident = Segment(None, "x", 4096, key=sysv_key), f"Segment(key={sysv_key}, mode='w')"
    else:
        p = str(tmp_path / "seg")
        seg, ident = Segment(path=p, mode="x", size=4096), f"Segment(path={p!r}, mode='w')"
    try:
        seg.write(b"parent wrote this", 0)
        r = run_python(f"from shmkit import Segment\ns = {ident}\nprint(s.read(0, 17).decode())\n"
                       f"s.write(b'child answered', 200)")
        assert r.stdout.strip() == "parent wrote this"
        assert seg.read(200, 14) == b"child answered"
    finally:
        seg.unlink()
        seg.close()


def test_pickle_reattaches_by_name(name, sysv_key):
    with Segment(name, "x", 100) as s, Segment(None, "x", 100, key=sysv_key) as v:
        s.write(b"p")
        t = pickle.loads(pickle.dumps(s))
        u = pickle.loads(pickle.dumps(v))
        try:
            assert t.read(0, 1) == b"p" and not t.created
            assert u.shmid == v.shmid
        finally:
            t.close()
            u.close()
        with pytest.raises(TypeError, match="send_fd"):
            pickle.dumps(Segment(None, "c", 100, backend="memfd"))
        s.unlink()
        v.unlink()


# -- memfd handed to an unrelated process over a Unix socket -------------------------------------

def test_memfd_to_unrelated_process_over_unix_socket(tmp_path, procs):
    sock_path = str(tmp_path / "s.sock")
    code = textwrap.dedent("""
        import socket, sys
        from shmkit import recv_fd
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sys.argv[1])
        seg = recv_fd(c)
        print(seg.backend, seg.size, seg.name, seg.read(0, 12).decode(), flush=True)
        seg.write(b"mapped by an unrelated process", 100)
        c.sendall(b"done")
        c.recv(1)
    """)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    p = spawn_python(code, sock_path)
    procs.append(p)
    with Segment("handed", "c", 8192, backend="memfd") as seg:
        seg.write(b"over SCM_RIGHTS"[:12], 0)
        conn, _ = srv.accept()
        with conn:
            shmkit.send_fd(conn, seg)
            assert conn.recv(4) == b"done"
            assert read_line(p) == "memfd 8192 handed over SCM_RIG"
            assert seg.read(100, 30) == b"mapped by an unrelated process"
            assert seg.stat().handles == 2  # the receiver has its own handle
            conn.sendall(b"x")
    p.wait(30)
    srv.close()


def test_send_fd_errors(tmp_path):
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TypeError, match="no file descriptor"):
            shmkit.send_fd(a, Segment(None, "c", 100, backend="anonymous"))
        with pytest.raises(TypeError):
            shmkit.send_fd(a, b"not a segment")
        a.sendall(b"plain data, no fd")
        with pytest.raises(shmkit.ShmkitError, match="without a file descriptor"):
            shmkit.recv_fd(b)
        a.close()
        with pytest.raises(ConnectionError):
            shmkit.recv_fd(b)
    u = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with u:
        with pytest.raises(ValueError, match="Unix"):
            shmkit.recv_fd(u)


def test_interpreter_never_crashes_on_hostile_input(name):
    """A handful of abuses that must raise, not crash (run in a child to catch a crash)."""
    code = textwrap.dedent(f"""
        from shmkit import Segment
        s = Segment({name!r}, "x", 4096)
        v = s.buf
        for f in (lambda: s.resize(1 << 62), lambda: s.read(1 << 62, 1),
                  lambda: s.write(b"x", 1 << 62), lambda: Segment(None, "w", backend="memfd", fd=99999),
                  lambda: Segment(None, "w", backend="memfd", fd=0)):
            try:
                f()
            except Exception as e:
                print(type(e).__name__)
        s.unlink(); s.close()
        print(bytes(v[:2]))
        v.release()
        print("alive")
    """)
    r = run_python(code, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("alive")

"""Regression tests for the numbered bugs of issue 13 (reliability).

Each scenario runs in a real child process (a plain interpreter), so that a crash is seen
as the child's death by a signal and a hang as a child that does not finish in time;
the test then fails saying which.  Every test here failed before its fix (the outputs
are in the reliability note).  Bugs that live in the wait/lock machinery being
redesigned (issue 12) are marked xfail(strict=True): they are fixed once, in the new
wait shape, in phase 2, and a strict xfail turns into a failure the day they pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from child_support import run_child
from conftest import unique
from segment_helpers import sysv_keys, sysv_key, sysv_rows  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)

SHMKIT_BIN = os.path.join(os.path.dirname(sys.executable), "shmkit")


def xfail_wait(n: int):
    """A bug of the wait/lock machinery: fixed with the new wait shape (issue 12)."""
    return pytest.mark.xfail(strict=True, reason=f"issue 13 #{n}: fixed with the new wait shape")


class Outcome:
    """How a child ended: "ok" (exit 0), "exit" (another code), "signal", or "hang"."""

    def __init__(self, how, code, out, err):
        self.how, self.code, self.out, self.err = how, code, out, err

    def __repr__(self):
        what = {"signal": f"died of signal {self.code}", "hang": "did not finish in time (hang)",
                "exit": f"exited with {self.code}", "ok": "exited with 0"}[self.how]
        return f"child {what}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def child(code: str, *args: str, timeout: float = 30.0, env: dict | None = None,
          sigint_after_line: str | None = None, cwd: str | None = None) -> Outcome:
    """Run ``code`` in a fresh interpreter; classify how it ended.  sigint_after_line:
    SIGINT one second after the child printed that line (child_support.run_child)."""
    rc, out, err, hung = run_child(code, *args, timeout=timeout, env=env, cwd=cwd,
                                   sigint_after_line=sigint_after_line)
    if hung:
        return Outcome("hang", None, out, err)
    assert rc is not None
    if rc < 0:
        return Outcome("signal", -rc, out, err)
    return Outcome("ok" if rc == 0 else "exit", rc, out, err)


def assert_ok(o: Outcome, *expected: str) -> None:
    assert o.how == "ok", repr(o)
    for e in expected:
        assert e in o.out, f"{e!r} not in the child's output\n{o!r}"


def remove_shm(name: str) -> None:
    for p in (f"/dev/shm/{name}",):
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                os.rmdir(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass


@pytest.fixture
def shm_name():
    n = unique("shmkit-i13")
    yield n
    remove_shm(n)


def free_pid() -> int:
    """A pid (and tid) that no process or thread has now."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


# the zone header's mutex (layout.h: struct shk_zone_header.lock at 640) and glibc's
# pthread_mutex_t on x86-64 / aarch64: __lock (owner tid of a robust mutex) at 0,
# __kind at 16
ZONE_LOCK = 640
MUTEX_KIND = 16


# -- 1. a call waiting while another thread closes the zone -----------------------------------

CLOSE_WHILE_WAITING = """
    import os, sys, threading, time
    import shmkit
    kind, name = sys.argv[1:3]
    z = shmkit.Zone(name, 4 << 20)
    os.unlink("/dev/shm/" + name)
    if kind == "queue-get":
        q = z.queue("q", 1 << 16)
        call = lambda: q.get(timeout=1.5)
    elif kind == "queue-put":
        q = z.queue("q", 4096)
        try:
            while True:
                q.put_nowait(b"x" * 200)
        except shmkit.QueueFull:
            pass
        call = lambda: q.put(b"x" * 200, timeout=1.5)
    elif kind == "lock":
        lk = z.lock("l"); lk.acquire()
        call = lambda: lk.acquire(timeout=1.5)
    elif kind == "event":
        e = z.event("e"); call = lambda: e.wait(1.5)
    elif kind == "semaphore":
        s = z.semaphore("s", 0); call = lambda: s.acquire(timeout=1.5)
    elif kind == "condition":
        c = z.condition("c")
        def call():
            with c:
                c.wait(1.5)
    elif kind == "barrier":
        b = z.barrier("b", 2); call = lambda: b.wait(1.5)
    elif kind == "board":
        b = z.board("b", 100); call = lambda: b.wait(timeout=1.5)
    def run():
        try:
            call()
            print("returned", flush=True)
        except Exception as e:
            print("raised", type(e).__name__, flush=True)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    z.close()
    t.join()
    print("survived")
"""


@pytest.mark.parametrize("kind", [
    "queue-get", "queue-put", "lock", "event", "semaphore", "condition", "barrier", "board"])
def test_1_closing_the_zone_while_a_call_waits(kind, shm_name):
    o = child(CLOSE_WHILE_WAITING, kind, shm_name, timeout=30)
    assert_ok(o, "survived")
    allowed = ("returned", "raised ClosedError", "raised ShmkitTimeoutError", "raised QueueEmpty",
               "raised QueueFull", "raised BrokenBarrierError")
    assert any(a in o.out for a in allowed), repr(o)


# -- 2. checkers and allocator readers: lengths that overflow ---------------------------------

OVERFLOW = """
    import os, struct, sys
    import shmkit
    what, name = sys.argv[1:3]
    z = shmkit.Zone(name, 1 << 20)
    os.unlink("/dev/shm/" + name)
    buf = z.segment.buf
    # extent 0 (layout.h: header.ext[0] at 768): start, end, desc_off, pages_off, first, n
    start, end, desc_off, pages_off, first, npages = struct.unpack_from("<QQQQII", buf, 768)
    def desc(off):  # offset of the page descriptor (24 bytes, slab at +0) of `off`
        return desc_off + 24 * ((off - pages_off) // 4096)
    a = z.alloc(8192); b = z.alloc(8192)
    if what == "check-run":
        struct.pack_into("<Q", buf, desc(b), (1 << 64) - 1)
        problems = z.check()
        print("problems", len(problems), problems[:2])
    elif what == "check-free-run":
        c = z.alloc(8192); z.free(c)
        struct.pack_into("<Q", buf, desc(c), (1 << 64) - 2)
        print("problems", len(z.check()))
    elif what == "alloc-free-run":
        c = z.alloc(8192); z.free(c)   # the free run after b starts at c
        struct.pack_into("<Q", buf, desc(c), (1 << 64) - 1)
        try:
            z.alloc(8192)
            print("allocated")
        except shmkit.CorruptedError as e:
            print("CorruptedError", e)
    elif what == "free-run":
        struct.pack_into("<Q", buf, desc(b), (1 << 64) - 1)
        try:
            z.free(b)
            print("freed")
        except shmkit.CorruptedError as e:
            print("CorruptedError", e)
    elif what == "dir-count":
        z.create("first", 100)
        dir_off = struct.unpack_from("<Q", buf, 256)[0]
        struct.pack_into("<I", buf, dir_off + 8, 1 << 31)   # live
        try:
            z.create("second", 100)
            print("created")
        except shmkit.CorruptedError as e:
            print("CorruptedError", e)
    print("alive")
"""


@pytest.mark.parametrize("what,expect", [
    ("check-run", "problems"), ("check-free-run", "problems"),
    ("alloc-free-run", "CorruptedError"), ("free-run", "CorruptedError"),
    ("dir-count", "CorruptedError")])
def test_2_shared_lengths_near_2_to_the_64_are_refused_not_followed(what, expect, shm_name):
    o = child(OVERFLOW, what, shm_name, timeout=20)
    assert_ok(o, expect, "alive")


# -- 3. a corrupted mutex kind ---------------------------------------------------------------

@pytest.mark.parametrize("kind", [0x40, 0x20, 0x7f, 0x12345600 | 146])  # PP, PI, junk
def test_3_corrupted_mutex_kind_is_corruption_not_abort(kind, shm_name):
    o = child(f"""
        import os, struct, shmkit
        z = shmkit.Zone({shm_name!r}, 1 << 20)
        os.unlink("/dev/shm/{shm_name}")
        struct.pack_into("<i", z.segment.buf, {ZONE_LOCK + MUTEX_KIND}, {kind})
        try:
            z.alloc(100)
        except shmkit.CorruptedError:
            print("CorruptedError")
    """, timeout=20)
    assert_ok(o, "CorruptedError")


def test_3_corrupted_dict_shard_mutex_kind_is_corruption_not_abort(shm_name):
    """The dict's fast path calls pthread_mutex_trylock itself: it checks the kind too."""
    o = child(f"""
        import os, struct, shmkit
        z = shmkit.Zone({shm_name!r}, 4 << 20)
        os.unlink("/dev/shm/{shm_name}")
        d = z.dict("d", 1 << 16)
        d["k"] = b"v"
        buf, dh = z.segment.buf, z.find("d").offset
        nshards, shards_off = struct.unpack_from("<I", buf, dh + 12)[0], struct.unpack_from("<Q", buf, dh + 40)[0]
        for i in range(nshards):
            struct.pack_into("<i", buf, dh + shards_off + 512 * i + {MUTEX_KIND}, 0x40)
        for call in (lambda: d.get("k"), lambda: d.set("k", b"w"), lambda: len(d)):
            try:
                call()
                print("returned")
            except shmkit.CorruptedError:
                print("CorruptedError")
    """, timeout=20)
    assert_ok(o, "CorruptedError")  # the writer's lock; reads take no lock (seqlock)


# -- 4. a segment shrunk by another process ---------------------------------------------------

def test_4_segment_shrunk_by_another_process_is_noticed(shm_name):
    o = child(f"""
        import os, subprocess, sys
        import shmkit
        name = {shm_name!r}
        s = shmkit.Segment(name, "x", 1 << 20)
        old_view = s.buf
        s.write(b"tail", (1 << 20) - 4)
        subprocess.run([sys.executable, "-c",
                        f"import shmkit; shmkit.Segment({{name!r}}, 'w').resize(4096)"], check=True)
        try:
            s.read((1 << 20) - 4, 4)
            print("read past the end")
        except IndexError as e:
            print("IndexError:", e)
        print("size", s.size)
        print("stale view byte", old_view[(1 << 20) - 1])
        s.write(b"head", 0)
        print("head", s.read(0, 4))
        old_view.release()
        s.unlink(); s.close()
    """, timeout=30)
    assert_ok(o, "IndexError:", "shrunk to 4096 bytes by another process", "size 4096",
              "stale view byte 0", "head b'head'")


def test_4_zone_is_never_shrunk_by_shmkit_and_a_foreign_truncation_is_reported(shm_name):
    """shmkit's own resize() refuses to shrink a zone (it killed the zone's processes with
    SIGBUS); a foreign truncation is reported by the zone's slow paths (lookups,
    structures, stats, check, opening), which read zeros past the new end instead of
    dying.  alloc()/free() and the structures' fast paths do not look (an fstat costs
    more than they do): see docs/reliability.md."""
    o = child(f"""
        import os, subprocess, sys
        import shmkit
        name = {shm_name!r}
        z = shmkit.Zone(name, 1 << 20)
        z.create("table", 200000)
        r = subprocess.run([sys.executable, "-c",
                            f"import shmkit; shmkit.Segment({{name!r}}, 'w').resize(8192)"],
                           capture_output=True, text=True)
        print("resize refused:", r.returncode != 0 and "never shrinks" in r.stderr)
        print("zone still usable:", z.alloc(100) > 0)
        fd = os.open("/dev/shm/" + name, os.O_RDWR)
        os.ftruncate(fd, 8192)          # a foreign process shrinks it
        os.close(fd)
        for call in (z.stats, z.check, z.objects, lambda: z.find("table"),
                     lambda: z.create("obj", 100000), lambda: shmkit.Zone(name)):
            try:
                call()
                print("no error")
            except shmkit.CorruptedError as e:
                print("CorruptedError:", e)
        z.close()
        os.unlink("/dev/shm/" + name)
        print("alive")
    """, timeout=30)
    assert_ok(o, "resize refused: True", "zone still usable: True", "shrunk to 8192 bytes",
              "alive")
    assert "no error" not in o.out, repr(o)


# -- 5. sparse objects adopted when the file system is full ---------------------------------

FILL_AND_ADOPT = """
    import os, sys
    import shmkit
    what, path, filler = sys.argv[1:4]
    size = int(sys.argv[4])
    if what.startswith("zone"):
        # what a zone creator SIGKILLed between sizing the object and reserving its space
        # leaves: shmkit's object (with its record), full size, sparse
        backend = "posix" if what == "zone-posix" else "file"
        ident = os.path.basename(path) if backend == "posix" else path
        shmkit.Segment(ident, "x", 0, backend=backend, _allow_empty=True).close()
        os.truncate(path, size)
    else:                              # a foreign sparse file
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, size)
        os.close(fd)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\\xff" * 65536
    try:
        while True:                    # fill the file system to the last byte
            n = os.write(fd, block)
            block = block[:n] if n < len(block) else block
    except OSError:
        pass
    try:
        os.write(fd, b"x")
    except OSError:
        pass
    os.close(fd)
    try:
        if what == "zone":
            z = shmkit.Zone(path, size, backend="file")
            z.alloc(size // 2)
            print("zone usable")
        elif what == "zone-posix":
            z = shmkit.Zone(os.path.basename(path), size)
            z.alloc(size // 2)
            print("zone usable")
        else:
            s = shmkit.Segment(path, "w", backend="file")
            s.write(b"\\x01" * size, 0)
            print("segment usable")
    except shmkit.NoSpaceError as e:
        print("NoSpaceError:", e)
"""


@pytest.mark.parametrize("what", ["zone", "segment"])
def test_5_sparse_object_on_a_full_file_system_is_reserved_or_refused(what, small_tmpfs):
    o = child(FILL_AND_ADOPT, what, str(small_tmpfs / "sparse"), str(small_tmpfs / "filler"),
              str(512 << 10), timeout=30)
    assert_ok(o, "NoSpaceError:")


def _unshare_works() -> str | None:
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "unshare -m failed")


def test_5_sparse_zone_in_a_full_dev_shm(tmp_path):
    """The issue's case exactly: a full-size sparse object in /dev/shm (what a zone creator
    SIGKILLed between sizing and reserving leaves), adopted when /dev/shm is full.  Runs
    in a private mount namespace with a 1 MiB tmpfs over /dev/shm."""
    why = _unshare_works()
    if why:
        pytest.skip(f"no private mount namespace here: {why}")
    script = tmp_path / "adopt.py"
    script.write_text(textwrap.dedent(FILL_AND_ADOPT))
    inner = (f"mount -t tmpfs -o size=1m tmpfs /dev/shm && "
             f"exec {sys.executable} {script} zone-posix /dev/shm/sparse /dev/shm/filler "
             f"{512 << 10}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                       capture_output=True, text=True, timeout=60)
    o = Outcome("ok" if r.returncode == 0 else ("signal" if r.returncode > 128 else "exit"),
                r.returncode, r.stdout, r.stderr)
    assert_ok(o, "NoSpaceError:")


# -- 6. a robust mutex naming a thread that does not exist -----------------------------------

GHOST_OWNER = """
    import os, struct, sys, time
    import shmkit
    what, name, ghost = sys.argv[1], sys.argv[2], int(sys.argv[3])
    z = shmkit.Zone(name, 4 << 20)
    os.unlink("/dev/shm/" + name)
    buf = z.segment.buf
    if what == "zone":
        call = lambda: z.alloc(100)
        lock_at = [640]
    elif what == "semaphore":
        s = z.semaphore("s", 1, undo=True)
        call = lambda: s.acquire()     # no timeout: a timed call returns at its timeout
        lock_at = [z.find("s").offset + 64]
    elif what == "board":
        z.board("b", 100)
        call = lambda: z.board("b", 100, writer=True)
        lock_at = [z.find("b").offset + 192]
    elif what == "dict":
        d = z.dict("d", 1 << 16)
        dh = z.find("d").offset
        nshards, shards_off = struct.unpack_from("<I", buf, dh + 12)[0], struct.unpack_from("<Q", buf, dh + 40)[0]
        call = lambda: d.set("k", b"v")
        lock_at = [dh + shards_off + 512 * i for i in range(nshards)]
    for at in lock_at:
        struct.pack_into("<i", buf, at, ghost)   # the mutex word names a thread that is not
    print("calling", flush=True)
    t0 = time.monotonic()
    try:
        call()
        print("returned")
    except KeyboardInterrupt:
        print("interrupted")
    except Exception as e:
        print("raised", type(e).__name__)
    print(f"after {time.monotonic() - t0:.2f} s")
"""


@pytest.mark.parametrize("what", ["zone", "semaphore", "board", "dict"])
@pytest.mark.parametrize("ghost", ["no-such-thread", "no-thread-at-all"])
def test_6_mutex_owned_by_a_thread_that_does_not_exist_is_dead(what, ghost, shm_name):
    tid = free_pid() if ghost == "no-such-thread" else -(1 << 31)  # FUTEX_WAITERS alone: nobody
    o = child(GHOST_OWNER, what, shm_name, str(tid), timeout=4)
    assert_ok(o, "after", "returned")  # taken over as from a dead owner, and repaired


@pytest.mark.parametrize("what", ["zone", "semaphore", "board", "dict"])
def test_6_mutex_word_naming_a_live_thread_that_never_unlocks_answers_ctrl_c(what, shm_name):
    """The owner exists (this test's own process), so it is not dead; the call waits, but
    Ctrl-C ends the wait."""
    o = child(GHOST_OWNER, what, shm_name, str(os.getpid()), timeout=6,
              sigint_after_line="calling")
    assert o.how in ("ok", "exit"), repr(o)
    assert "interrupted" in o.out or "KeyboardInterrupt" in o.err, repr(o)


LIVE_IMPOSTOR_TIMED = """
    import os, struct, sys, time
    import shmkit
    what, name, live = sys.argv[1], sys.argv[2], int(sys.argv[3])
    z = shmkit.Zone(name, 4 << 20)
    os.unlink("/dev/shm/" + name)
    buf = z.segment.buf
    T = 0.3
    if what == "semaphore":
        s = z.semaphore("s", 1, undo=True)
        lock_at = z.find("s").offset + 64
        def call():
            return "returned %s" % s.acquire(timeout=T)
        def works():
            assert s.acquire(timeout=1) and s.value == 0
            s.release()
            return s.value == 1
    elif what == "semaphore-nonblocking":
        s = z.semaphore("s", 1, undo=True)
        lock_at = z.find("s").offset + 64
        def call():
            return "returned %s" % s.acquire(blocking=False)
        def works():
            assert s.acquire(blocking=False)
            s.release()
            return s.value == 1
    elif what == "barrier":
        b = z.barrier("b", 1)
        lock_at = z.find("b").offset + 64
        def call():
            return "returned %s" % b.wait(T)
        def works():
            return b.wait(1) == 0 and not b.broken
    elif what == "zone":
        q = z.queue("q", 1 << 16)
        lock_at = 640          # the zone header's mutex: reserving allocates from the zone
        def call():
            return "returned %r" % q.reserve(64, timeout=T)
        def works():
            r = q.reserve(3, timeout=1)
            memoryview(r)[:3] = b"abc"
            r.commit()
            return bytes(q.get(timeout=1)) == b"abc" and z.check() == []
    elif what == "board":
        bd = z.board("bd", 100)
        lock_at = z.find("bd").offset + 192
        def call():
            return "returned %r" % (bd.wait_newer(0, timeout=T),)
        def works():
            w = z.board("bd", 100, writer=True)
            w.publish(b"v")
            return bd.wait_newer(0, timeout=1)[0] == b"v"
    struct.pack_into("<i", buf, lock_at, live)   # names a live thread that never unlocks
    for _ in range(2):
        t0 = time.monotonic()
        try:
            print(call())
        except Exception as e:
            print("raised", type(e).__name__)
        print(f"after {time.monotonic() - t0:.2f} s", flush=True)
    struct.pack_into("<i", buf, lock_at, 0)      # put back
    print("works" if works() else "broken")
"""


@pytest.mark.parametrize("what,result", [
    ("semaphore", "returned False"), ("semaphore-nonblocking", "returned False"),
    ("barrier", "raised BrokenBarrierError"), ("zone", "raised QueueFull"),
    ("board", "raised ShmkitTimeoutError")])
def test_6_mutex_word_naming_a_live_thread_costs_a_timed_call_its_timeout(what, result,
                                                                         shm_name):
    """The deadline of a call with a timeout reaches the internal mutexes it takes: a live
    impostor costs it its timeout (0.3 s here; a non-blocking call 0.1 s), and it returns
    what a timeout returns; with the word put back, the object works."""
    o = child(LIVE_IMPOSTOR_TIMED, what, shm_name, str(os.getpid()), timeout=8)
    assert_ok(o, "works")
    assert o.out.count(result) == 2, repr(o)
    for line in o.out.splitlines():
        if line.startswith("after "):
            assert float(line.split()[1]) < 0.3 + 1.0, repr(o)


# -- 7. a corrupted queue position -----------------------------------------------------------

def test_7_corrupted_queue_position_does_not_spin_forever(shm_name):
    o = child(f"""
        import os, struct, time
        import shmkit
        z = shmkit.Zone({shm_name!r}, 4 << 20)
        os.unlink("/dev/shm/{shm_name}")
        q = z.queue("q", 4096)
        q.put(b"a")
        struct.pack_into("<Q", z.segment.buf, z.find("q").offset + 64, 0)  # tail_pos
        t0 = time.monotonic()
        try:
            q.put(b"x", timeout=0.05)
            print("returned")
        except Exception as e:
            print("raised", type(e).__name__)
        print(f"after {{time.monotonic() - t0:.2f}} s")
    """, timeout=4)
    assert_ok(o, "after", "raised CorruptedError")


# -- 8. sizes beyond what the machine can hold ---------------------------------------------

HUGE = """
    import os, sys
    import shmkit
    what, name = sys.argv[1:3]
    n = (1 << 63) - 1
    print("start", flush=True)
    try:
        if what == "memfd":
            shmkit.Segment(None, "c", n, backend="memfd")
        elif what == "memfd-zone":
            shmkit.Zone(None, n, backend="memfd")
        elif what == "anonymous":
            shmkit.Segment(None, "c", n, backend="anonymous")
        elif what == "posix":
            shmkit.Segment(name, "x", n)
        elif what == "sysv":
            shmkit.Segment(None, "x", n, key=int(sys.argv[3]))
        elif what == "sysv-zone":
            shmkit.Zone(None, n, backend="sysv", key=int(sys.argv[3]))
        print("created")
    except shmkit.NoSpaceError as e:
        print("NoSpaceError:", e)
"""


def _shmem_of(pid: int) -> int:
    """Bytes of memory files (memfd, shm) the process holds open or mapped, now."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssShmem:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


@pytest.mark.parametrize("what", ["memfd", "memfd-zone", "anonymous", "posix", "sysv",
                                  "sysv-zone"])
def test_8_huge_sizes_fail_at_once_without_allocating(what, shm_name, sysv_keys):
    """Watched from outside: the child may not take more than 64 MiB of memory files
    before it answers (before the fix, memfd allocated until the machine ran out; the
    watchdog SIGKILLs it at 64 MiB)."""
    limit = 64 << 20
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HUGE), what, shm_name,
                          str(sysv_keys.new())], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    peak, killed = 0, False
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        used = _shmem_of(p.pid)
        peak = max(peak, used)
        if used > limit:
            p.kill()
            killed = True
            break
    if p.poll() is None:
        p.kill()
    out, err = p.communicate()
    assert not killed, f"{what}: took {peak >> 20} MiB before answering (killed)"
    assert p.returncode == 0, f"{what}: child ended with {p.returncode}\n{out}\n{err}"
    assert "NoSpaceError:" in out, out + err
    assert "more than this machine can hold" in out or "free" in out, out


# -- 9. a FIFO (or another non-regular file) planted under a name ----------------------------

@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_9_non_regular_file_is_refused_without_blocking(kind, shm_name):
    path = f"/dev/shm/{shm_name}"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        os.mkdir(path, 0o700)
    o = child(f"""
        import shmkit
        for mode in ("r", "w", "c"):
            try:
                shmkit.Segment({shm_name!r}, mode, 4096 if mode == "c" else 0)
                print(mode, "opened")
            except Exception as e:
                print(mode, type(e).__name__, e)
    """, timeout=10)
    assert_ok(o)
    for mode in "rwc":
        line = next((x for x in o.out.splitlines() if x.startswith(mode + " ")), "")
        assert "not a regular file" in line, repr(o)
        assert "size 0" not in line, repr(o)
    for cmd in (["dump", shm_name], ["info", shm_name]):
        r = subprocess.run([SHMKIT_BIN, *cmd], capture_output=True, text=True, timeout=10)
        assert r.returncode in (3, 6), (cmd, r.returncode, r.stdout, r.stderr)
        assert "not a" in r.stderr, (cmd, r.stderr)


# -- 10. creating and opening the same name at the same moment --------------------------------

RACE_CREATOR = """
    import sys, time
    from shmkit import Segment
    backend, ident, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    kw = {"key": int(ident)} if backend == "sysv" else {}
    name = None if backend == "sysv" else ident
    end = time.monotonic() + seconds
    made = 0
    while time.monotonic() < end:
        try:
            s = Segment(name, "x", 1 << 16, lifecycle="unlink_on_last_close", **kw)
        except FileExistsError:
            time.sleep(0.0002)
            continue
        made += 1
        time.sleep(0.001)
        s.close()
    print("made", made)
"""

RACE_OPENER = """
    import os, sys, time, collections
    import shmkit
    from shmkit import Segment
    backend, ident, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    kw = {"key": int(ident)} if backend == "sysv" else {}
    name = None if backend == "sysv" else ident
    end = time.monotonic() + seconds
    seen = collections.Counter()
    while time.monotonic() < end:
        try:
            s = Segment(name, "w", **kw)
        except FileNotFoundError:
            continue
        except Exception as e:
            seen[f"failed: {type(e).__name__}: {e}"] += 1
            continue
        seen[f"lifecycle {s.lifecycle}"] += 1
        time.sleep(0.002)   # meanwhile the creator closes: we still hold it
        if s.removed:
            seen["removed while open"] += 1
        s.close()
    for k, v in sorted(seen.items()):
        print(v, k)
"""


@pytest.mark.parametrize("backend", ["posix", "sysv"])
def test_10_openers_racing_a_creator_wait_for_it_and_are_counted(backend, shm_name, sysv_keys,
                                                                 procs):
    ident = shm_name if backend == "posix" else str(sysv_keys.new())
    seconds = "4"
    c = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RACE_CREATOR), backend, ident,
                          seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    o = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RACE_OPENER), backend, ident,
                          seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.extend([c, o])
    cout, cerr = c.communicate(timeout=60)
    oout, oerr = o.communicate(timeout=60)
    assert c.returncode == 0 and o.returncode == 0, cerr + oerr
    opened = sum(int(x.split()[0]) for x in oout.splitlines() if "lifecycle unlink_on_last_close" in x)
    assert opened > 20, f"the race hardly happened:\n{cout}\n{oout}"
    bad = [x for x in oout.splitlines() if "lifecycle unlink_on_last_close" not in x]
    assert not bad, f"openers saw:\n{oout}\ncreator: {cout}"


def test_10_two_c_mode_racers_both_succeed_and_both_see_the_lifecycle(procs):
    code = """
        import sys, time
        from shmkit import Segment
        base, me = sys.argv[1], sys.argv[2]
        bad = made = 0
        for i in range(150):
            name = f"{base}-{i}"
            while time.time() % 0.004 > 0.0005:   # both start each round together
                pass
            s = Segment(name, "c", 1 << 16, lifecycle="unlink_on_last_close")
            made += s.created
            if s.lifecycle != "unlink_on_last_close" or s.size != 1 << 16:
                bad += 1
                print("bad", name, s.lifecycle, s.size)
            s.close()
        print("made", made, "bad", bad)
    """
    base = unique("shmkit-i13-race")
    ps = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), base, str(k)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for k in range(2)]
    procs.extend(ps)
    try:
        outs = [p.communicate(timeout=90) for p in ps]
        for p, (out, err) in zip(ps, outs):
            assert p.returncode == 0, err
            assert " bad 0" in out, out
    finally:
        for i in range(150):
            remove_shm(f"{base}-{i}")


# -- 11a. Board waits with a negative timeout -----------------------------------------------

@pytest.mark.parametrize("call", ["wait", "wait_newer", "aio.wait", "aio.wait_newer"])
def test_11_board_negative_timeout_does_not_wait_forever(call, shm_name):
    o = child(f"""
        import asyncio, os, shmkit
        z = shmkit.Zone({shm_name!r}, 1 << 20)
        os.unlink("/dev/shm/{shm_name}")
        b = z.board("b", 100)
        async def aio():
            return await b.{call}(0, timeout=-1)
        try:
            if {call!r}.startswith("aio."):
                print("returned", asyncio.run(aio()))
            else:
                print("returned", b.{call}(0, timeout=-1))
        except Exception as e:
            print("raised", type(e).__name__)
    """, timeout=4)
    assert_ok(o, "raised ValueError")


# -- 11b. a queue reopened in another mode --------------------------------------------------

def test_11_queue_reopened_in_another_mode_is_refused(zone):
    """The mode is recorded at creation: the other mode is refused, naming both; no mode
    takes the recorded one."""
    from shmkit import ObjectMismatchError
    q = zone.queue("jobs", 1 << 16)
    q.put(b"raw bytes")
    with pytest.raises(ObjectMismatchError, match="mode bytes.*mode objects"):
        zone.queue("jobs", mode="objects")
    assert zone.queue("jobs").mode == "bytes"
    o = zone.queue("things", 1 << 16, mode="objects")
    o.put({"a": 1})
    with pytest.raises(ObjectMismatchError, match="mode objects.*mode bytes"):
        zone.queue("things", mode="bytes")
    again = zone.queue("things")          # no mode: the recorded one
    assert again.mode == "objects"
    assert again.get(timeout=1) == {"a": 1}
    again.put([1, 2])
    assert zone.queue("things", mode="objects").get(timeout=1) == [1, 2]


def test_11_queue_mode_recorded_across_processes(zone, shm_name):
    """Another process opening without a mode gets the recorded one; with the other mode,
    ObjectMismatchError."""
    zone.queue("objs", 1 << 16, mode="objects").put({"x": 1})
    o = child(f"""
        import shmkit
        z = shmkit.Zone({zone.name!r})
        q = z.queue("objs")
        print("mode", q.mode, q.get(timeout=1))
        try:
            z.queue("objs", mode="bytes")
        except shmkit.ObjectMismatchError as e:
            print("refused:", e)
    """, timeout=20)
    assert_ok(o, "mode objects {'x': 1}", "refused:", "exists with mode objects")


def test_11_queue_that_recorded_no_mode_opens_in_either(zone):
    """A queue whose header has no mode bits (made before modes were recorded, or by a C
    caller that did not say) takes the mode it is given, as before; none: bytes."""
    import struct
    zone.queue("old", 1 << 16)
    flags_at = zone.find("old").offset + 52
    buf = zone.segment.buf
    (flags,) = struct.unpack_from("<I", buf, flags_at)
    assert flags & 0x6 == 0x2                       # recorded: bytes
    struct.pack_into("<I", buf, flags_at, flags & ~0x6)
    assert zone.queue("old").mode == "bytes"
    assert zone.queue("old", mode="objects").mode == "objects"
    struct.pack_into("<I", buf, flags_at, flags | 0x6)  # both bits: corrupt
    from shmkit import CorruptedError
    with pytest.raises(CorruptedError, match="unknown flags"):
        zone.queue("old")


# -- 11c. object types by name --------------------------------------------------------------

def test_11_object_types_are_named_in_errors(zone):
    from shmkit import ObjectTypeError
    zone.lock("x")
    with pytest.raises(ObjectTypeError) as ei:
        zone.queue("x")
    msg = str(ei.value)
    assert "lock" in msg and "queue" in msg and "type 2" not in msg, msg


# -- 11d. Zone() on a foreign zero-filled segment -------------------------------------------

def test_11_zone_does_not_silently_format_a_foreign_segment(shm_name):
    from shmkit import SegmentExistsError, Zone
    path = f"/dev/shm/{shm_name}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 1 << 20)        # a zero-filled object made by someone else
    os.close(fd)
    with pytest.raises(SegmentExistsError, match="adopt=True"):
        Zone(shm_name, 1 << 20)
    with open(path, "rb") as f:
        assert f.read(4096) == bytes(4096)       # untouched
    with Zone(shm_name, 1 << 20, adopt=True) as z:
        z.alloc(100)


# -- 11e. shmkit info on a SysV segment -----------------------------------------------------

def _sysv_row(shmid: int) -> dict:
    return next(r for r in sysv_rows() if int(r["shmid"]) == shmid)


def test_11_info_of_a_sysv_segment_does_not_attach(sysv_key):
    from shmkit import Segment
    with Segment(None, "x", 8192, key=sysv_key) as s:
        before = _sysv_row(s.shmid)
        r = subprocess.run([SHMKIT_BIN, "info", "--key", hex(sysv_key)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        after = _sysv_row(s.shmid)
        assert after["lpid"] == before["lpid"], (before, after, r.stdout)
        assert after["atime"] == before["atime"], (before, after)
        s.unlink()


# -- 11f. --key out of range ----------------------------------------------------------------

def test_11_cli_key_out_of_range_is_refused_not_truncated(sysv_key):
    from shmkit import Segment
    with Segment(None, "x", 4096, key=sysv_key) as s:
        wide = sysv_key + (1 << 32)
        for cmd in (["rm", "--force", "--key", hex(wide)], ["info", "--key", hex(wide)],
                    ["dump", "--key", hex(wide)], ["check", "--key", str(-(1 << 31) - 1)]):
            r = subprocess.run([SHMKIT_BIN, *cmd], capture_output=True, text=True, timeout=30)
            assert r.returncode == 2, (cmd, r.returncode, r.stdout, r.stderr)
            assert "32 bits" in r.stderr, (cmd, r.stderr)
        assert not s.removed
        s.unlink()


# -- 11g. a registry pre-created by another user --------------------------------------------

def test_11_registry_precreated_by_another_user_is_refused_clearly(tmp_path, sysv_key):
    reg = tmp_path / "registry"
    reg.mkdir(mode=0o755)
    os.chown(reg, 65534, 65534) if os.geteuid() == 0 else pytest.skip("needs root to chown")
    o = child(f"""
        import shmkit
        try:
            shmkit.Segment(None, "x", 4096, key={sysv_key}, lifecycle="unlink_on_last_close")
            print("created")
        except shmkit.ShmkitError as e:
            print("refused:", e)
    """, env={"SHMKIT_REGISTRY": str(reg)}, timeout=30)
    assert_ok(o, "refused:", "uid 65534", "SHMKIT_REGISTRY")
    assert not any(True for _ in reg.iterdir())


def test_11_a_misaligned_directory_entry_is_corruption(shm_name):
    """Found by the corruption fuzz under UBSan: a directory entry whose offset was
    corrupted to an odd value made Board attach read its header as misaligned words
    (undefined behaviour; futexes need aligned words): refused as corruption now, for
    every object kind, and reported by zone.check().  The same for the directory's own
    offset in the zone header (objects(), check(), stats())."""
    o = child(f"""
        import os, struct
        import shmkit
        z = shmkit.Zone({shm_name!r}, 1 << 20)
        os.unlink("/dev/shm/{shm_name}")
        z.board("b", 100)
        buf = z.segment.buf
        d = struct.unpack_from("<Q", buf, 256)[0]
        e = next(d + 64 + 128 * i for i in range(16)
                 if bytes(buf[d + 64 + 128 * i:d + 66 + 128 * i]) == b"b\\0")
        struct.pack_into("<Q", buf, e + 72, struct.unpack_from("<Q", buf, e + 72)[0] + 3)
        try:
            z.board("b", 100)
            print("used")
        except shmkit.CorruptedError as e:
            print("CorruptedError:", e)
        print("check:", z.check())
        struct.pack_into("<Q", buf, 256, d + 3)      # the directory's own offset, odd
        for call in (z.objects, z.check):
            try:
                call()
            except shmkit.CorruptedError as e:
                print("directory:", e)
        print("stats:", z.stats().objects)
    """, timeout=20)
    assert_ok(o, "CorruptedError:", "misaligned", "not 8-aligned", "directory offset",
              "stats: 0")


# -- 11i. the CLI run by another user -----------------------------------------------------

@pytest.fixture(scope="module")
def other_user():
    """A second user, created for these tests and removed after them (as root only)."""
    from campaigns import _users
    why = _users.skip_reason()
    if why:
        pytest.skip(why)
    with _users.TempUser() as user:
        yield user


def test_11_cli_run_by_another_user_says_permission_denied(other_user, shm_name, sysv_key):
    """root's segments (mode 0600), seen by another user: the CLI must say "unknown" and
    "permission denied" (exit 4), not "not shmkit's" (5), "not a zone" (1) or "already
    gone" (3)."""
    from campaigns._users import run_as
    from shmkit import Segment, Zone, cli
    seg = Segment(shm_name, "x", 8192)
    zone = Zone(shm_name + "-z", 1 << 20)
    sysv = Segment(None, "x", 8192, key=sysv_key)
    try:
        res = run_as(other_user, cli.main, ["info", shm_name])
        assert res.code == 0 and "made by shmkit  unknown" in res.out, res
        res = run_as(other_user, cli.main, ["ls", shm_name + "*"])
        rows = [line.split() for line in res.out.splitlines()[1:]]
        assert res.code == 0 and rows and all(r[-1] == "?" and r[-2] == "?" for r in rows), res
        for argv in (["check", shm_name + "-z"], ["check", "--key", hex(sysv_key)],
                     ["rm", shm_name], ["rm", "--key", hex(sysv_key)],
                     ["rm", "--force", shm_name], ["rm", "--force", "--key", hex(sysv_key)],
                     ["dump", shm_name]):
            res = run_as(other_user, cli.main, argv)
            assert res.how == "ok" and res.code == 4, (argv, res)
            assert "ermission denied" in res.out, (argv, res)
        assert not seg.removed and not sysv.removed
    finally:
        seg.unlink(); seg.close()
        zone.unlink(); zone.close()
        sysv.unlink(); sysv.close()


# -- 11h. raw exceptions from inside --------------------------------------------------------

@pytest.mark.parametrize("call", [
    "Segment(NAME + '\\udcff', 'x', 4096).unlink()",   # a name os.listdir can return
    "z.lock('bad\\udcffname')",
    "z.create('bad\\udcffname', 100)",
    "z.board('b', 100, writer=True).loan((-1, -1)).__enter__()",
    # found by the API fuzz
    "z.create('negative', -1)",                              # SIGSEGV before
    "z._live().obj_get('huge', 1, 2**64 - 1, 0, shmkit._core.O_CREATE)",  # the core's guard
    "z.find_or_create('t', 8, type_code=-5, aux=2**64); raise SystemExit('accepted')",  # wrapped
    "shmkit.ftok('/', 2**31)",
    "Zone(NAME + '-t', 1 << 20, tag='\\udcff')",
    "Zone(NAME + '\\udcff', 0, create=False)",             # UnicodeDecodeError before
    "Zone('\\udcff', 16384, backend='memfd')",              # UnicodeEncodeError before
    "z.ndarray('big', (2**62,), 'float64')",
    "__import__('shmkit.inventory').inventory.find_segment('x' * 300)",
    "z.free(-1)",
    "z.ndarray('d', (2,), '\\udcff')",                      # UnicodeEncodeError before
    # found by the corruption fuzz: a dict str value (and key) that is not UTF-8
    "d = z.dict('d', 1 << 16); d['k-marker'] = 'v-marker-text'; b = z.segment.buf; "
    "i = bytes(b).index(b'v-marker-text'); b[i] = 0xff; "
    "j = bytes(b).index(b'k-marker'); b[j + 1] = 0xfe; print(d.get('k-marker'), list(d.keys()))",
    # found by the corruption fuzz: a directory name that is not UTF-8
    "z.lock('named'); import struct; d = struct.unpack_from('<Q', z.segment.buf, 256)[0]; "
    "[z.segment.buf.__setitem__(slice(d + 64 + 128 * i, d + 65 + 128 * i), b'\\xff') "
    "for i in range(16)]; print([o.name for o in z.objects()])",
])
def test_11_only_shmkit_or_documented_exceptions_escape(call, shm_name):
    o = child(f"""
        import os
        import shmkit
        from shmkit import Segment, Zone
        NAME = {shm_name!r}
        z = Zone(NAME, 1 << 20)
        os.unlink("/dev/shm/" + NAME)
        try:
            {call}
            print("no error")
        except (shmkit.ShmkitError, TypeError) as e:
            print("ok", type(e).__name__, e)
        except ValueError as e:
            if isinstance(e, UnicodeError):
                raise
            print("ok", type(e).__name__, e)
    """, timeout=20)
    assert_ok(o)
    assert o.out.startswith("ok") or "no error" in o.out, repr(o)

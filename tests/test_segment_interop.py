"""Interop with real peers: CPython's multiprocessing.shared_memory, ipcs/ipcrm, and a C
program compiled here with gcc (shmget/shmat, ftok)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import shmkit
from shmkit import Segment, SegmentNotFoundError
from conftest import run_python
from segment_helpers import sysv_exists, sysv_key, sysv_keys  # noqa: F401

pytestmark = pytest.mark.timeout(120)

# CPython < 3.13 registers every SharedMemory it attaches to with the resource tracker,
# which unlinks it (with a "leaked shared_memory" warning) when that process exits: a
# known CPython bug (gh-82300).  A well-behaved peer opts out; shmkit itself never uses
# the resource tracker.
STDLIB_ATTACH = textwrap.dedent("""
    import sys
    from multiprocessing import shared_memory, resource_tracker
    def attach(name):
        try:
            return shared_memory.SharedMemory(name=name, track=False)   # 3.13+
        except TypeError:
            shm = shared_memory.SharedMemory(name=name)
            resource_tracker.unregister(shm._name, "shared_memory")
            return shm
""")


def test_stdlib_shared_memory_sees_a_shmkit_segment(name):
    with Segment(name, "x", 4096) as seg:
        seg.write(b"written by shmkit", 0)
        code = STDLIB_ATTACH + textwrap.dedent("""
            shm = attach(sys.argv[1])
            print(bytes(shm.buf[:17]).decode(), shm.size >= 4096)
            shm.buf[100:115] = b"stdlib answered"
            shm.close()
        """)
        r = subprocess.run([sys.executable, "-W", "always", "-c", code, name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["written", "by", "shmkit", "True"]
        assert "resource_tracker" not in r.stderr and "leaked" not in r.stderr, r.stderr
        assert seg.read(100, 15) == b"stdlib answered"
        assert os.path.exists(f"/dev/shm/{name}") and not seg.removed  # nobody unlinked it
        seg.unlink()


def test_shmkit_sees_a_stdlib_segment_and_leaves_it_alone(name, procs):
    code = textwrap.dedent("""
        import sys
        from multiprocessing import shared_memory
        shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=8192)
        shm.buf[:15] = b"made by stdlib!"
        print("ready", flush=True)
        sys.stdin.readline()
        print(bytes(shm.buf[200:213]).decode(), flush=True)
        shm.close()
        shm.unlink()
    """)
    p = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline().strip() == "ready"
    with Segment(name, "w") as seg:
        assert seg.read(0, 15) == b"made by stdlib!"
        assert seg.lifecycle is None and not seg.stat().shmkit  # not ours
        seg.write(b"shmkit was here", 200)
    assert os.path.exists(f"/dev/shm/{name}")  # closing never unlinks what is not ours
    out, err = p.communicate("go\n", timeout=60)
    assert out.strip() == "shmkit was he", out  # the 13 bytes the peer reads
    assert p.returncode == 0 and "Traceback" not in err, err
    assert not os.path.exists(f"/dev/shm/{name}")  # its owner removed it


# -- ipcs / ipcrm ---------------------------------------------------------------------------------

needs_ipcs = pytest.mark.skipif(not shutil.which("ipcs") or not shutil.which("ipcrm"),
                                reason="ipcs/ipcrm (util-linux) not installed")


def ipcs_row(shmid: int) -> list[str] | None:
    out = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[1] == str(shmid):
            return cols
    return None


@needs_ipcs
def test_ipcs_lists_a_shmkit_sysv_segment(sysv_key):
    with Segment(None, "x", 12345, key=sysv_key, perm=0o640) as seg:
        row = ipcs_row(seg.shmid)
        assert row is not None
        key, shmid, owner, perms, nbytes, nattch = row[:6]
        assert int(key, 16) == sysv_key and key == f"0x{sysv_key:08x}"
        assert perms == "640" and int(nbytes) == 12345 and int(nattch) == 1
        import pwd
        assert owner == pwd.getpwuid(os.geteuid()).pw_name
        seg.unlink()


@needs_ipcs
def test_ipcrm_removal_is_reported_clearly(sysv_key):
    seg = Segment(None, "x", 4096, key=sysv_key)
    try:
        seg.write(b"still here", 0)
        r = subprocess.run(["ipcrm", "-m", str(seg.shmid)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert seg.removed and seg.stat().removed
        assert seg.read(0, 10) == b"still here"  # the mapping stays valid
        with pytest.raises(SegmentNotFoundError, match="already removed.*ipcrm"):
            seg.unlink()
        with pytest.raises(SegmentNotFoundError):
            Segment(None, "w", key=sysv_key)  # the key is gone with it
        row = ipcs_row(seg.shmid)
        assert row is not None and "dest" in row  # ipcs agrees: destroyed at last detach
    finally:
        seg.close()
    assert ipcs_row(seg.shmid) is None


@needs_ipcs
def test_ipcrm_by_key_then_recreate(sysv_key):
    with Segment(None, "x", 4096, key=sysv_key) as seg:
        subprocess.run(["ipcrm", "-M", str(sysv_key)], check=True, capture_output=True)
        with Segment(None, "x", 4096, key=sysv_key) as fresh:  # the key is free again
            assert fresh.shmid != seg.shmid and not fresh.removed
            fresh.unlink()


# -- a C program compiled here ---------------------------------------------------------------------

C_PEER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "ftok")) {
        printf("%d\n", (int)ftok(argv[2], 'P'));
        return 0;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    if (!strcmp(argv[1], "read")) {          /* attach what Python made, reply */
        int id = shmget(key, 0, 0);
        if (id < 0) { perror("shmget"); return 2; }
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1) { perror("shmat"); return 3; }
        printf("%s\n", p);
        strcpy(p + 100, "C wrote back");
        shmdt(p);
        return 0;
    }
    if (!strcmp(argv[1], "create")) {        /* make one for Python to read */
        int id = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
        if (id < 0) { perror("shmget"); return 2; }
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1) { perror("shmat"); return 3; }
        strcpy(p, "made in C");
        shmdt(p);
        printf("%d\n", id);
        return 0;
    }
    return 1;
}
"""


@pytest.fixture(scope="module")
def c_peer(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("cpeer")
    src = d / "peer.c"
    src.write_text(C_PEER)
    exe = d / "peer"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-o", str(exe), str(src)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return str(exe)


def test_c_program_reads_what_python_wrote_and_writes_back(c_peer, sysv_key):
    with Segment(None, "x", 4096, key=sysv_key) as seg:
        seg.write(b"hello from Python\0", 0)
        r = subprocess.run([c_peer, "read", hex(sysv_key)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "hello from Python"
        assert seg.read(100, 12) == b"C wrote back"
        assert seg.stat().last_pid not in (None, os.getpid())  # the C peer attached last
        seg.unlink()


def test_python_reads_what_c_created(c_peer, sysv_keys):
    key = sysv_keys.new()
    r = subprocess.run([c_peer, "create", hex(key)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    shmid = int(r.stdout)
    sysv_keys.track_id(shmid)
    with Segment(None, "w", key=key) as seg:
        assert seg.shmid == shmid and seg.read(0, 9) == b"made in C"
        st = seg.stat()
        assert not st.shmkit and st.lifecycle is None and st.creator_pid != os.getpid()
        seg.unlink()


def test_ftok_matches_c(c_peer, tmp_path):
    anchor = tmp_path / "anchor"
    anchor.write_text("x")
    r = subprocess.run([c_peer, "ftok", str(anchor)], capture_output=True, text=True, check=True)
    assert shmkit.ftok(anchor, ord("P")) == int(r.stdout)

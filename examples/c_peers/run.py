"""C programs and Python sharing memory both ways: System V (shmget/shmat) and POSIX
(shm_open/ftruncate/mmap).

    python examples/c_peers/run.py

Compiles sysv_peer.c and posix_peer.c with gcc (into a temporary directory), then, for
each kind of segment:

1. Python creates the segment with shmkit and writes a message; the C program attaches,
   checks it (CRC-32) and writes its reply, which Python checks;
2. the C program creates the segment (IPC_CREAT|IPC_EXCL / O_CREAT|O_EXCL) and writes a
   message; Python opens it with shmkit (it is not shmkit's: ``stat().shmkit`` is
   False, and shmkit never removes it), checks it and replies; the C program checks the
   reply and removes the segment itself.

The SysV key is ``ftok(path, 'C')`` on both sides: ``shmkit.ftok`` is C's ftok(3).  The
layout of a message is in exchange.h.  Exits 0 only if every CRC matched.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from typing import Callable

import shmkit
from shmkit import inventory

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 1 << 20                              # two halves of 512 KiB
HEADER = struct.Struct("<IIII")             # magic, length, crc32, writer pid (exchange.h)
MAGIC = 0x4D4B4853
PAYLOAD_AT = 64


def write_message(buf: memoryview, payload: bytes) -> None:
    buf[PAYLOAD_AT:PAYLOAD_AT + len(payload)] = payload
    buf[:HEADER.size] = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), os.getpid())


def check_message(buf: memoryview, who: str, writer: int) -> bool:
    magic, length, crc, pid = HEADER.unpack(buf[:HEADER.size])
    if magic != MAGIC or length > len(buf) - PAYLOAD_AT:
        print(f"{who}: no message there (magic 0x{magic:08x})")
        return False
    got = zlib.crc32(buf[PAYLOAD_AT:PAYLOAD_AT + length])
    ok = bool(got == crc and pid == writer)
    print(f"{who}: {length} bytes from pid {pid}, crc32 {got:08x} "
          f"{'matches' if ok else 'DOES NOT MATCH (or wrong writer)'}")
    return ok


def compile_peers(build: str) -> dict[str, str]:
    exes = {}
    for prog in ("sysv_peer", "posix_peer"):
        exe = os.path.join(build, prog)
        cmd = ["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe,
               os.path.join(HERE, f"{prog}.c"), "-lrt"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"FAILED: gcc could not build {prog}.c:\n{r.stderr}")
        exes[prog] = exe
    print(f"built {', '.join(exes)} with gcc")
    return exes


def run_c(cmd: list[str]) -> tuple[bool, str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode == 0, r.stdout


def python_creates(seg: shmkit.Segment, exe: str, target: str, label: str) -> bool:
    """Python made the segment: C attaches, checks, replies."""
    half = seg.size // 2
    write_message(seg.buf[:half], os.urandom(half - PAYLOAD_AT))
    print(f"Python wrote {half - PAYLOAD_AT} bytes in {label}")
    c = subprocess.Popen([exe, "attach", target], stdout=subprocess.PIPE, text=True)
    out, _ = c.communicate(timeout=60)
    sys.stdout.write(out)
    return c.returncode == 0 and check_message(seg.buf[half:], "Python read C's reply", c.pid)


def c_creates(exe: str, target: str, open_segment: Callable[[], shmkit.Segment],
              label: str) -> bool:
    """C made the segment: Python opens it, checks, replies; C checks and removes it."""
    c = subprocess.Popen([exe, "create", target, str(SIZE), "7"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert c.stdout is not None
    try:
        ready = c.stdout.readline().split()
        if not ready or ready[0] != "ready":
            print(f"C did not create {label}: {ready}")
            return False
        with open_segment() as seg:
            st = seg.stat()
            print(f"Python opened {label}: {st.size} bytes, created by pid {st.creator_pid}, "
                  f"shmkit's: {st.shmkit}")
            half = seg.size // 2
            ok = check_message(seg.buf[:half], "Python read C's message", c.pid)
            ok = ok and not st.shmkit and st.creator_pid in (c.pid, None)
            write_message(seg.buf[half:], os.urandom(half - PAYLOAD_AT))
            print("Python wrote its reply")
            out, _ = c.communicate("go\n", timeout=60)
            sys.stdout.write(out)
        return ok and c.returncode == 0
    finally:
        if c.poll() is None:
            c.kill()
            c.wait()


def main() -> int:
    if not shutil.which("gcc"):
        print("FAILED: this example needs gcc (apt-get install gcc)", file=sys.stderr)
        return 1
    results = {}
    with tempfile.TemporaryDirectory(prefix="shmkit-c-peers-") as build:
        exes = compile_peers(build)

        # -- System V: the key from ftok() on a file both sides know ---------------------------
        anchors = []
        for n in ("py", "c"):
            anchors.append(os.path.join(build, f"key-{n}"))
            open(anchors[-1], "w").close()
        key = shmkit.ftok(anchors[0], ord("C"))
        print(f"\n-- SysV: Python creates key 0x{key:08x} (ftok), C attaches")
        with shmkit.Segment(None, "x", SIZE, key=key) as seg:
            try:
                results["sysv, Python -> C -> Python"] = python_creates(
                    seg, exes["sysv_peer"], anchors[0], f"SysV key 0x{key:08x}")
            finally:
                seg.unlink()
        key = shmkit.ftok(anchors[1], ord("C"))
        print(f"\n-- SysV: C creates key 0x{key:08x}, Python attaches")
        results["sysv, C -> Python -> C"] = c_creates(
            exes["sysv_peer"], anchors[1], lambda: shmkit.Segment(None, "w", key=key),
            f"SysV key 0x{key:08x}")
        gone = not any(i.key == key for i in inventory.list_segments(posix=False))
        results["sysv, removed by C (IPC_RMID) at its last detach"] = gone

        # -- POSIX: /dev/shm/NAME -----------------------------------------------------------------
        name = f"c-peers-{os.getpid()}"
        print(f"\n-- POSIX: Python creates /dev/shm/{name}, C maps it")
        with shmkit.Segment(name, "x", SIZE) as seg:
            try:
                results["posix, Python -> C -> Python"] = python_creates(
                    seg, exes["posix_peer"], "/" + name, f"/dev/shm/{name}")
            finally:
                seg.unlink()
        cname = f"c-peers-{os.getpid()}-c"
        print(f"\n-- POSIX: C creates /dev/shm/{cname}, Python maps it")
        try:
            results["posix, C -> Python -> C"] = c_creates(
                exes["posix_peer"], "/" + cname, lambda: shmkit.Segment(cname, "w"),
                f"/dev/shm/{cname}")
        finally:
            left = os.path.exists(f"/dev/shm/{cname}")
            results["posix, removed by C (shm_unlink)"] = not left
            if left:
                os.unlink(f"/dev/shm/{cname}")

    print()
    for what, ok in results.items():
        print(f"{'ok ' if ok else 'BAD'} {what}")
    if not all(results.values()):
        print("FAILED: a message did not arrive whole", file=sys.stderr)
        return 1
    print("OK: C (shmget/shmat and shm_open/mmap) and Python exchanged 1 MiB segments both "
          "ways, every CRC-32 matched, each side removed what it created")
    return 0


if __name__ == "__main__":
    sys.exit(main())

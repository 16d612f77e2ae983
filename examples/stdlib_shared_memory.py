"""Python's own multiprocessing.shared_memory and shmkit segments, both ways - and the
resource tracker that deletes segments other processes still use.

    python examples/stdlib_shared_memory.py

``multiprocessing.shared_memory.SharedMemory(name)`` registers the segment it attaches
to with the resource tracker, and the tracker unlinks everything still registered when
that process exits ("leaked shared_memory objects").  For a segment that other processes
still use, that removes the name under them: they keep their mapping, but every process
that opens the name afterwards finds nothing.  Python 3.13 added ``track=False``; before
3.13 there is no opt-out.  So:

    shm = shmkit.attach_shared_memory(name)        # SharedMemory, never tracked, any version

This program shows, with real processes that exit:

1. a shmkit segment read and written by a stdlib process through
   ``shmkit.attach_shared_memory()``: the process exits, the segment stays;
2. the same with the stdlib's default ``SharedMemory(name)``: the process exits, its
   tracker unlinks the name while we still use the segment, a new process cannot open
   it, and ``shmkit ls`` reports it as "vanished";
3. a segment made by the stdlib, opened by shmkit, left alone by shmkit (it removes only
   what it created), removed by its owner.

Exits 0 only if each of those held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import shmkit

SAFE = textwrap.dedent("""
    import sys, shmkit
    shm = shmkit.attach_shared_memory(sys.argv[1])
    print(bytes(shm.buf[:13]).decode())
    shm.buf[64:77] = b"stdlib, safe!"
    shm.close()
""")

DEFAULT = textwrap.dedent("""
    import sys
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=sys.argv[1])      # the default: tracked
    print(bytes(shm.buf[:13]).decode())
    shm.close()
""")

OPEN = "import sys, shmkit\nprint(shmkit.Segment(sys.argv[1], 'w').read(0, 13).decode())"

STDLIB_OWNER = textwrap.dedent("""
    import sys
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=4096)
    shm.buf[:14] = b"stdlib's own!!"
    print("ready", flush=True)
    sys.stdin.readline()
    print(bytes(shm.buf[100:113]).decode(), flush=True)
    shm.close()
    shm.unlink()                                              # the owner removes it
""")


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=60)


def exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def main() -> int:
    base = f"stdlib-interop-{os.getpid()}"
    problems = []

    print(f"1. shmkit.attach_shared_memory() in another process (Python {sys.version.split()[0]})")
    name = base + "-safe"
    with shmkit.Segment(name, "x", 4096) as seg:
        seg.write(b"shmkit's data", 0)
        r = python(SAFE, name)
        print(f"   it read {r.stdout.strip()!r} and exited; tracker warnings: "
              f"{'leaked' in r.stderr}; the name is still there: {exists(name)}; it wrote "
              f"{seg.read(64, 13)!r}")
        if r.returncode or not exists(name) or seg.read(64, 13) != b"stdlib, safe!":
            problems.append(f"attach_shared_memory lost the segment: {r.stderr}")
        seg.unlink()

    print("2. SharedMemory(name), the stdlib's default, in another process")
    name = base + "-default"
    seg = shmkit.Segment(name, "x", 4096)
    try:
        seg.write(b"shmkit's data", 0)
        r = python(DEFAULT, name)
        warned = [line.split("UserWarning: ")[-1] for line in r.stderr.splitlines()
                  if "leaked" in line]
        print(f"   it read {r.stdout.strip()!r} and exited; its resource tracker said: "
              f"{warned[0] if warned else '(nothing)'}")
        if exists(name):
            print("   this Python left the name alone: nothing to report")
        else:
            again = python(OPEN, name)
            print(f"   the name is gone; our mapping still reads {seg.read(0, 13)!r}; a new "
                  f"process opening it: {again.stderr.strip().splitlines()[-1]}")
            ls = subprocess.run([sys.executable, "-m", "shmkit", "ls", name, "--json"],
                                capture_output=True, text=True, timeout=60)
            rows = json.loads(ls.stdout or "[]")
            status = rows[0]["status"] if rows else None
            print(f"   shmkit ls {name}: status {status}")
            if again.returncode == 0 or status != ["vanished", "in-use"]:
                problems.append(f"the vanished segment was not reported: {rows}")
    finally:
        seg.close()

    print("3. a segment made by the stdlib, opened by shmkit")
    name = base + "-stdlib"
    owner = subprocess.Popen([sys.executable, "-c", STDLIB_OWNER, name], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert owner.stdout is not None
    try:
        if owner.stdout.readline().strip() != "ready":
            problems.append("the stdlib owner did not start")
        with shmkit.Segment(name, "w") as seg:
            st = seg.stat()
            print(f"   shmkit read {seg.read(0, 14)!r}; made by shmkit: {st.shmkit}")
            seg.write(b"shmkit wrote!", 100)
        print(f"   shmkit closed it; still there for its owner: {exists(name)}")
        if st.shmkit or not exists(name):
            problems.append("shmkit removed or claimed a segment it did not create")
        out, _ = owner.communicate("go\n", timeout=60)
        print(f"   the owner read {out.strip()!r} and unlinked it: gone {not exists(name)}")
        if owner.returncode or out.strip() != "shmkit wrote!" or exists(name):
            problems.append("the stdlib owner did not get shmkit's write or remove it")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if exists(name):
            os.unlink(f"/dev/shm/{name}")

    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print("OK: attach_shared_memory() kept the segment, the stdlib's default removed the name "
          "and shmkit ls reported it vanished, a stdlib segment was left to its owner")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Android-style anonymous shared memory handed over by file descriptor (ashmem + Binder),
with Linux's memfd and SCM_RIGHTS.

    python examples/ashmem_fd.py

On Android a service allocates an ashmem region (no name anyone can open), fills it,
makes it read-only for others (``ashmem_set_prot_region(PROT_READ)``) and passes the
*file descriptor* to a client through Binder; the client maps it.  The Linux equivalent:

    ashmem_create_region(name, size)     shmkit.Segment(name, "c", size, backend="memfd")
    ashmem_set_prot_region(fd, PROT_READ) fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | ...)
    Binder: parcel.writeFileDescriptor   shmkit.send_fd(sock, segment)   (SCM_RIGHTS over a
                                         Unix socket; the kernel installs a new fd in the
                                         receiving process)
    mmap in the client                   shmkit.recv_fd(sock) -> a Segment, mapped

The service (this process) publishes a 4 MiB "frame" and a small writable "reply" region
to a client that is an unrelated program (this file with --client, in its own session,
inheriting nothing): the socket is its only way to the memory - no name in /dev/shm,
nothing in ipcs.  The client checks the frame's SHA-256, finds that the kernel refuses
it a writable mapping (the seal), and answers in the reply region.  Exits 0 only if the
frame arrived intact, stayed read-only for the client, and the answer came back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import socket
import subprocess
import sys

import shmkit

FRAME_BYTES = 4 << 20
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)   # Linux 5.1


def memfd_links(pid: int) -> list[str]:
    """What /proc says this process has open that is a memfd."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("/memfd:"):
            out.append(link)
    return out


def client(address: str) -> int:
    """The unrelated process: connect, receive the fds, map, check, answer."""
    def say(*words: object) -> None:
        print("client:", *words, flush=True)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(address)
    frame = shmkit.recv_fd(sock)                 # the kernel gave us an fd: map it
    reply = shmkit.recv_fd(sock)
    digest = hashlib.sha256(frame.buf).hexdigest()
    say(f"pid {os.getpid()} got {frame.size} bytes ({frame.name!r}), read-only: "
        f"{frame.readonly}, sha256 {digest[:16]}...; open memfds: {memfd_links(os.getpid())}")
    try:                                         # ask the kernel for a writable mapping
        mmap.mmap(frame.fd, frame.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        refused = "no"
    except OSError as e:
        refused = f"{type(e).__name__} ({e.strerror})"
    say(f"a writable mapping of the sealed frame: refused with {refused}")
    answer = json.dumps({"sha256": digest, "pid": os.getpid(), "refused": refused,
                         "names": sorted(n for n in os.listdir("/dev/shm")
                                         if frame.name and frame.name in n)}).encode()
    reply.write(len(answer).to_bytes(4, "little") + answer, 0)
    frame.close()
    reply.close()
    sock.send(b"done")
    return 0


def main() -> int:
    address = f"\0shmkit-example-ashmem-{os.getpid()}"     # abstract: no file to clean up
    label = f"camera-frame-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(address)
    server.listen(1)
    frame = shmkit.Segment(label, "c", FRAME_BYTES, backend="memfd")
    reply = shmkit.Segment(f"reply-{os.getpid()}", "c", 4096, backend="memfd")
    problems = []
    c = None
    try:
        frame.buf[:] = os.urandom(FRAME_BYTES)                   # "render" the frame
        digest = hashlib.sha256(frame.buf).hexdigest()
        # ashmem_set_prot_region(PROT_READ): nobody may map it writable from now on (our
        # own mapping stays writable), and it can no longer shrink or grow
        fcntl.fcntl(frame.fd, fcntl.F_ADD_SEALS,
                    F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        print(f"service {os.getpid()}: memfd {label!r}, {FRAME_BYTES >> 20} MiB, sha256 "
              f"{digest[:16]}..., sealed against writable mappings; in /dev/shm: "
              f"{[n for n in os.listdir('/dev/shm') if label in n]}")
        c = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", address[1:]],
                             start_new_session=True, close_fds=True)
        conn, _ = server.accept()
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            peer = int.from_bytes(creds[:4], "little")
            print(f"service: client pid {peer} connected; sending two file descriptors "
                  "(SCM_RIGHTS)")
            shmkit.send_fd(conn, frame)
            shmkit.send_fd(conn, reply)
            conn.settimeout(30)
            done = conn.recv(16)
        c.wait(30)
        n = int.from_bytes(reply.read(0, 4), "little")
        answer = json.loads(reply.read(4, n)) if 0 < n < 4000 else {}
        print(f"service: the client answered: sha256 {str(answer.get('sha256'))[:16]}..., "
              f"writable mapping refused: {answer.get('refused')}")
        if done != b"done" or c.returncode != 0:
            problems.append("the client did not finish")
        if answer.get("sha256") != digest:
            problems.append("the frame did not arrive intact")
        if not str(answer.get("refused", "no")).startswith("PermissionError"):
            problems.append("the client could map the sealed frame writable")
        if answer.get("names") != [] or answer.get("pid") != peer:
            problems.append(f"unexpected answer {answer}")
    finally:
        if c is not None and c.poll() is None:
            c.kill()
            c.wait(10)
        frame.close()
        reply.close()
        server.close()
    left = memfd_links(os.getpid())
    print(f"service: closed; memfds still open here: {left} (freed with the last user)")
    if left:
        problems.append("a memfd is still open")
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print("OK: an unrelated process got 4 MiB of anonymous shared memory by file descriptor "
          "only (no name anywhere), intact (SHA-256), read-only by seal, and answered through "
          "a second memfd")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        sys.exit(client("\0" + sys.argv[2]))
    sys.exit(main())

"""KSM (kernel same-page merging) and shared memory: what it merges, what it never
merges, and why shared memory does not need it.

    python examples/ksm_merging.py

KSM's daemon, ksmd, merges identical pages into one copy-on-write page - but only in
*private anonymous* memory that a process marked with ``madvise(MADV_MERGEABLE)``.  The
kernel refuses to mark a shared mapping: ``madvise`` returns 0 and does nothing.  So KSM
never merges a shmkit segment (or anything in /dev/shm, SysV, memfd, a file) - and it
need not: one copy in shared memory, mapped by every process, already is the
deduplication.  This program shows each of these on this machine:

1. 4 MiB of identical pages twice: in private anonymous memory and in a shmkit segment,
   both given MADV_MERGEABLE; /proc/self/smaps shows which one the kernel marked
   mergeable ("mg");
2. if ksmd runs (or may be started: as root, it is switched on for the run and switched
   back off after, one run at a time), the private pages merge into one (watched in
   /proc/self/ksm_merging_pages and /sys/kernel/mm/ksm), a write to one of them
   unmerges just that page, and the segment's pages stay as they are;
3. the segment mapped by four processes is one copy: their proportional shares (Pss in
   /proc/PID/smaps) add up to its size once, and tmpfs holds it once.

If ksmd cannot run here (no KSM in the kernel, or off and not root), it says so and shows
1 and 3.  Exits 0 only if what it could check held.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import sys
import time
from typing import IO, Any

import shmkit

KSM = "/sys/kernel/mm/ksm"
PAGE = mmap.PAGESIZE
PAGES = 1024                                   # 4 MiB of 4 KiB pages
SIZE = PAGES * PAGE
MADV_MERGEABLE = getattr(mmap, "MADV_MERGEABLE", 12)

libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def read(path: str) -> int | None:
    """An integer from /sys or /proc, None if absent (or not a number)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def ksm(name: str) -> int | None:
    return read(os.path.join(KSM, name))


def address(buf: Any) -> int:
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c


def is_header(token: str) -> bool:
    """smaps: a mapping's first line starts with its address range, "lo-hi"."""
    return "-" in token and not token.endswith(":")


def vma(pid: int, addr: int) -> dict[str, Any]:
    """The /proc/PID/smaps entry of the mapping that contains ``addr``: its path, its
    VmFlags, its sizes in bytes."""
    block: dict[str, Any] | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if is_header(head[0]):
                if block is not None:
                    break                                  # past ours
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                if lo <= addr < hi:
                    block = {"path": head[5] if len(head) > 5 else ""}
            elif block is not None:
                if head[0] == "VmFlags:":
                    block["flags"] = head[1:]
                elif head[-1] == "kB":
                    block[head[0].rstrip(":")] = int(head[1]) * 1024
    return block or {}


def segment_share(pid: int, path: str) -> tuple[int, int]:
    """(Rss, Pss) in bytes of process ``pid``'s mapping of ``path``."""
    rss = pss = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if is_header(head[0]):
                inside = len(head) > 5 and head[5] == path
            elif inside and head[0] in ("Rss:", "Pss:"):
                if head[0] == "Rss:":
                    rss += int(head[1]) * 1024
                else:
                    pss += int(head[1]) * 1024
    return rss, pss


def merging_pages() -> int | None:
    return read("/proc/self/ksm_merging_pages")


class Ksmd:
    """ksmd switched on for this run if it is off and we may (root), back off after.

    Runs of this program take turns (an flock on the ``run`` file itself, so nothing is
    left behind): one that found ksmd running only because another run had switched it
    on would otherwise see it switched off under it."""

    def __init__(self) -> None:
        self.lock: IO[str] | None = None
        self.previous: int | None = None
        self.available = os.path.isdir(KSM)
        self.running = False
        self.started = False

    def __enter__(self) -> "Ksmd":
        if not self.available:
            return self
        self.lock = open(os.path.join(KSM, "run"))
        fcntl.flock(self.lock, fcntl.LOCK_EX)          # until the previous run restored it
        self.previous = ksm("run")
        self.running = self.previous == 1
        if self.previous == 0 and os.access(os.path.join(KSM, "run"), os.W_OK):
            with open(os.path.join(KSM, "run"), "w") as f:
                f.write("1")
            self.started = self.running = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            with open(os.path.join(KSM, "run"), "w") as f:
                f.write(str(self.previous))
        if self.lock is not None:
            self.lock.close()


def main() -> int:
    problems: list[str] = []
    pattern = bytes(range(256)) * (PAGE // 256)        # one page; every page the same
    name = f"ksm-example-{os.getpid()}"
    print(f"KSM here: {'run = %s' % ksm('run') if os.path.isdir(KSM) else 'not in this kernel'}"
          f"; pages_shared {ksm('pages_shared')}, pages_sharing {ksm('pages_sharing')}"
          + (" (as ksmd left them: not updated while it is off)"
             if ksm("run") == 0 and ksm("pages_sharing") else ""))

    private = mmap.mmap(-1, SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    seg = shmkit.Segment(name, "x", SIZE)
    children = []
    try:
        private.write(pattern * PAGES)
        seg.buf[:] = pattern * PAGES
        p_addr, s_addr = address(private), address(seg.buf)
        rc_p = libc.madvise(p_addr, SIZE, MADV_MERGEABLE)
        err_p = ctypes.get_errno()
        rc_s = libc.madvise(s_addr, SIZE, MADV_MERGEABLE)
        err_s = ctypes.get_errno()
        p_vma, s_vma = vma(os.getpid(), p_addr), vma(os.getpid(), s_addr)
        p_mg, s_mg = "mg" in p_vma.get("flags", []), "mg" in s_vma.get("flags", [])
        print(f"1. madvise(MADV_MERGEABLE): private anonymous -> {rc_p or 0}"
              f"{' (' + os.strerror(err_p) + ')' if rc_p else ''}, marked mergeable: {p_mg}; "
              f"shmkit segment ({s_vma.get('path')}) -> {rc_s}"
              f"{' (' + os.strerror(err_s) + ')' if rc_s else ''}, marked mergeable: {s_mg}")
        if not os.path.isdir(KSM):
            if rc_p == 0:
                problems.append("madvise(MADV_MERGEABLE) succeeded without KSM in the kernel")
        elif not p_mg or s_mg or rc_s != 0:
            problems.append("the kernel did not mark private memory mergeable, or marked the "
                            "shared mapping")

        with Ksmd() as ksmd:
            if not ksmd.available:
                print("2. no KSM in this kernel: nothing to merge")
            elif not ksmd.running:
                print(f"2. ksmd is off (run = {ksm('run')}) and this user cannot start it: "
                      "no merging to show")
            else:
                if ksmd.started:
                    print("2. ksmd was off: switched on for this run (run 0 -> 1), switched "
                          "back off at the end")
                else:
                    print("2. ksmd is running")
                sharing0 = ksm("pages_sharing") or 0
                deadline = time.monotonic() + 30
                merged = merging_pages()
                while time.monotonic() < deadline:
                    merged = merging_pages()
                    if merged is not None and merged >= PAGES - 1:
                        break
                    if merged is None and (ksm("pages_sharing") or 0) - sharing0 >= PAGES - 1:
                        break
                    time.sleep(0.05)
                took = 30 - (deadline - time.monotonic())
                stat = os.stat(f"/dev/shm/{name}")
                print(f"   after {took:.1f} s: this process's merged pages "
                      f"{merged} of {PAGES} private ones (pages_sharing {sharing0} -> "
                      f"{ksm('pages_sharing')}, pages_shared {ksm('pages_shared')}); the "
                      f"segment still occupies {stat.st_blocks * 512 >> 10} KiB of tmpfs")
                if merged is not None and merged < PAGES - 1:
                    problems.append(f"only {merged} of {PAGES} identical private pages merged")
                if stat.st_blocks * 512 < SIZE:
                    problems.append("the segment's pages were merged or dropped")
                if merged is not None:
                    private[5 * PAGE:5 * PAGE + 1] = b"!"   # copy-on-write: unmerges one page
                    # the write gets a private copy at once; ksmd notices on its next pass
                    deadline = time.monotonic() + 15
                    after = merging_pages()
                    while after == merged and time.monotonic() < deadline:
                        time.sleep(0.05)
                        after = merging_pages()
                    print(f"   one byte written to a merged private page: merged pages "
                          f"{merged} -> {after} (copy-on-write: that page alone)")
                    if after != merged - 1:
                        problems.append(f"a write left {after} of {merged} pages merged")
                # leave ksm's figures as we found them: our pages go, and ksmd gets two
                # full passes to forget them before it may be switched off again
                private.close()
                scans = ksm("full_scans") or 0
                deadline = time.monotonic() + 10
                while (ksm("full_scans") or 0) < scans + 2 and time.monotonic() < deadline:
                    time.sleep(0.05)

        # 3. one copy, mapped by four processes
        path = f"/dev/shm/{name}"
        for _ in range(3):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                bytes(seg.buf[::PAGE])                      # touch every page: mapped
                os.write(w, b"1")
                time.sleep(60)                              # until the parent kills it
                os._exit(0)
            os.close(w)
            os.read(r, 1)
            os.close(r)
            children.append(pid)
        shares = {pid: segment_share(pid, path) for pid in [os.getpid(), *children]}
        total_pss = sum(p for _, p in shares.values())
        print(f"3. the segment mapped by {len(shares)} processes: Rss "
              f"{[r >> 10 for r, _ in shares.values()]} KiB each, Pss "
              f"{[p >> 10 for _, p in shares.values()]} KiB each, Pss in all "
              f"{total_pss >> 10} KiB for a {SIZE >> 10} KiB segment: one copy")
        if abs(total_pss - SIZE) > SIZE // 20:
            problems.append(f"the processes' shares add up to {total_pss}, not {SIZE}")
    finally:
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        private.close()
        seg.close()
        seg.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print("OK: KSM marks and merges only private anonymous pages; the kernel refuses to mark "
          "shared memory; one shared segment mapped by several processes is held once")
    return 0


if __name__ == "__main__":
    sys.exit(main())

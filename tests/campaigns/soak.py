"""Soak: several processes using every structure for a while, watched from outside.

    python -m tests.campaigns soak --seconds 900 --seed 7

Four worker processes share one zone and loop over zone allocations, a bytes queue and
an objects queue, a dict (sets, gets, deletes, increments, lists), a lock, a semaphore
and a board (one writer, three readers), and every half second create and close a
POSIX segment with lifecycle ``unlink_on_last_close`` (which starts a reaper) and every
second a SysV one.  The campaign samples, every half second, each worker's RSS and
number of open fds, the /dev/shm names of the run, its SysV segments and registry
records, and the reapers alive.  At the end, after the workers stopped:

    leftovers   /dev/shm names, SysV segments, registry records and reapers of the run
                must all be gone (the zone itself is removed by the campaign)
    fds         a worker's fd count at the end may not exceed its count after warm-up
                by more than 4
    RSS         a worker's RSS may not grow by more than 16 MiB + 10 % after warm-up
                (the first quarter of the run)
"""

from __future__ import annotations

import os
import random
import signal
import time

from ._common import Cleanup, Report, deadline_after


def worker(zone, index, prefix, key, seed, stop_name):
    import shmkit
    from shmkit import QueueEmpty, QueueFull, Segment
    rnd = random.Random(seed)
    q = zone.queue("soak-q", 1 << 20)
    oq = zone.queue("soak-oq", 1 << 20, mode="objects")
    d = zone.dict("soak-d", 4 << 20)
    lk = zone.lock("soak-lock")
    sem = zone.semaphore("soak-sem", 2)
    board = zone.board("soak-board", 4096, writer=(index == 0))
    stop = zone.event(stop_name)
    offs = []
    next_seg = next_sysv = 0.0
    n = 0
    while not stop.is_set():
        n += 1
        if len(offs) < 64:
            offs.append(zone.alloc(rnd.choice((64, 700, 5000, 40000))))
        else:
            zone.free(offs.pop(rnd.randrange(len(offs))))
        try:
            q.put(os.urandom(rnd.randrange(1, 3000)), timeout=0.01)
        except QueueFull:
            pass
        try:
            q.get(timeout=0.01)
        except QueueEmpty:
            pass
        try:
            oq.put({"i": n, "b": b"x" * rnd.randrange(100)}, timeout=0.01)
            oq.get(timeout=0.01)
        except (QueueFull, QueueEmpty):
            pass
        k = f"k{rnd.randrange(500)}"
        d[k] = os.urandom(rnd.randrange(1, 2000))
        d.get(f"k{rnd.randrange(500)}")
        d.incr("hits", 1, init=0)
        if rnd.random() < 0.1:
            d.delete(k)
        d.rpush(f"l{index}", b"item")
        if d.llen(f"l{index}") > 50:
            d.lpop(f"l{index}")
        with lk:
            pass
        if sem.acquire(timeout=0.01):
            sem.release()
        if index == 0:
            board.publish(os.urandom(rnd.randrange(1, 4096)))
        else:
            board.read()
        now = time.monotonic()
        if now >= next_seg:
            next_seg = now + 0.5
            s = Segment(f"{prefix}-w{index}-{n}", "x", 64 << 10, lifecycle="unlink_on_last_close")
            s.write(b"soak")
            s.close()
        if now >= next_sysv:
            next_sysv = now + 1.0
            s = Segment(None, "x", 64 << 10, key=key, lifecycle="unlink_on_last_close")
            s.close()
    for off in offs:
        zone.free(off)


def _status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
            else:
                rss = 0
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return rss, fds


def _reapers(prefix_or_keys) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"shmkit._reaper" in cmd and any(x.encode() in cmd for x in prefix_or_keys):
            out.append(int(p))
    return out


def run(seconds: float, seed: int) -> Report:
    import multiprocessing as mp

    import shmkit

    rep = Report("soak", seed, seconds)
    rnd = random.Random(seed)
    clean = Cleanup()
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["shmkit", "shmkit.sync", "shmkit.queue", "shmkit.dict",
                                "shmkit.board", "tests.campaigns.soak"])
    zname = clean.name("zone")
    zone = shmkit.Zone(zname, 16 << 20, max_size=256 << 20)
    keys = [clean.sysv_key(rnd) for _ in range(4)]
    stop = zone.event("soak-stop")
    procs = []
    samples = {}
    shm_seen = sysv_seen = reap_seen = 0
    try:
        for i in range(4):
            p = ctx.Process(target=worker, args=(zone, i, clean.prefix, keys[i],
                                                 rnd.getrandbits(32), "soak-stop"))
            p.start()
            procs.append(p)
        warm = time.monotonic() + max(1.0, seconds / 4)
        end = deadline_after(seconds)
        markers = [clean.prefix] + [str(k) for k in keys]
        while time.monotonic() < end:
            time.sleep(0.5)
            for i, p in enumerate(procs):
                st = _status(p.pid)
                if st is None:
                    continue
                s = samples.setdefault(i, {"first": None, "last": None, "max_fds": 0})
                if time.monotonic() >= warm and s["first"] is None:
                    s["first"] = st
                s["last"] = st
                s["max_fds"] = max(s["max_fds"], st[1])
            shm_seen = max(shm_seen, len(clean.shm_names()) - 1)
            sysv_seen = max(sysv_seen, len(clean.sysv_left()))
            reap_seen = max(reap_seen, len(_reapers(markers)))
        stop.set()
        died = []
        for i, p in enumerate(procs):
            p.join(30)
            if p.is_alive():
                died.append(f"worker {i} did not stop")
                p.kill()
                p.join(5)
            elif p.exitcode != 0:
                died.append(f"worker {i} ended with {p.exitcode}")
        for msg in died:
            rep.findings.append({"what": msg})
        # leftovers: give the reapers of the last segments a moment
        grace = time.monotonic() + 5
        while time.monotonic() < grace and (_reapers(markers) or len(clean.shm_names()) > 1
                                            or clean.sysv_left()):
            time.sleep(0.05)
        left_shm = [n for n in clean.shm_names() if n != zname]
        left_sysv = clean.sysv_left()
        left_rec = clean.records_left()
        left_reapers = _reapers(markers)
        rep.rows.append({"check": "leftovers", "shm": len(left_shm), "sysv": len(left_sysv),
                         "records": len(left_rec), "reapers": len(left_reapers),
                         "max alive during the run": {"shm": shm_seen, "sysv": sysv_seen,
                                                      "reapers": reap_seen}})
        if left_shm or left_sysv or left_rec or left_reapers:
            rep.findings.append({"what": "leftovers", "shm": left_shm, "sysv": left_sysv,
                                 "records": left_rec, "reapers": left_reapers})
        for i, s in sorted(samples.items()):
            if s["first"] is None or s["last"] is None:
                continue
            (rss0, fd0), (rss1, fd1) = s["first"], s["last"]
            row = {"check": f"worker {i}", "rss after warm-up MiB": round(rss0 / 2**20, 1),
                   "rss at end MiB": round(rss1 / 2**20, 1), "fds after warm-up": fd0,
                   "fds at end": fd1, "max fds": s["max_fds"]}
            rep.rows.append(row)
            if fd1 > fd0 + 4:
                rep.findings.append({"what": "fd growth", **row})
            if rss1 > rss0 * 1.1 + (16 << 20):
                rep.findings.append({"what": "RSS growth", **row})
        qs = zone.queue("soak-q").statistics()
        rep.figures["queue messages"] = qs.gets
        rep.figures["dict statistics"] = {"items": len(zone.dict("soak-d")),
                                          "recoveries": zone.dict("soak-d").statistics().recoveries}
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
        zone.close()
        clean.run()
    return rep

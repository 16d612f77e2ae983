"""Kill campaign: SIGKILL lock holders, queue producers and consumers, and dict writers at
random moments, and account exactly for what was acknowledged.

    python -m tests.campaigns kill --seconds 600 --seed 7

Three parts share the time.  Workers are real processes (a forkserver that has imported
shmkit forks them); the campaign SIGKILLs a random one every 5-40 ms and starts a
replacement.  Every worker acknowledges what it completed in a plain shared file (not in
shmkit), one aligned 8-byte store (or one O_APPEND write) after the operation returned,
so a kill can only ever lose the acknowledgement of the one operation in flight:

locks   Workers increment a counter inside ``with lock:`` (a read, a short busy wait, a
        write) and watch a "holder" word for a second holder.  Checks: no two holders
        (``violations``), ``counter - acked`` between 0 and the kills (an increment done
        but not acknowledged), the lock still acquirable at the end.
queue   Producers put numbered, checksummed messages of varying length and acknowledge
        each put; consumers log every message they get.  Checks: no torn message, no
        duplicate, nothing delivered that was never put, and every acknowledged message
        delivered - or accounted for: taken by a consumer that died holding it
        (``statistics().dropped_gets``) or got by a consumer killed before it could log
        it (at most one per killed consumer).
dict    Writers own a group of keys and write them round after round with versioned,
        checksummed values, acknowledging each set; a replacement continues a killed
        writer's group from its last acknowledgement.  A reader checks every value it
        sees.  Checks: no torn value, no eviction (the dict is big enough), and at the end
        every key holds exactly the value of its last acknowledged write (or, for the one
        key whose write was in flight when a writer was killed at the very end, that one).
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import struct
import time
import zlib
from collections import Counter

from ._common import Cleanup, Report, SHM_DIR, deadline_after

ACCT_SIZE = 1 << 20
STOP = 0          # u64: 1 = workers stop
STOP_CONS = 8     # u64: 1 = consumers stop (after the producers)
COUNTER = 16      # u64: the lock-protected counter
HOLDER = 24       # u64: pid of the holder, 0 = none
VIOLATIONS = 32   # u64: a second holder was seen
TORN = 40         # u64: torn values or messages seen
LAST_VIOLATION = 48  # u64: the pid that still held the lock when another took it
OVERLAP = 56      # u64: a dict group had two writers at once (the campaign's own bug)
ACKS = 4096       # u64 per worker instance


def _acct(path):
    """The accounting file as an array of u64 words.  Each word is written with one
    8-byte store (ctypes): struct.pack_into("<Q") writes byte by byte, and a SIGKILL
    between two bytes tears the word (which first showed up here as a lock that lost or
    invented thousands of increments)."""
    import ctypes
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, ACCT_SIZE)
    finally:
        os.close(fd)
    return (ctypes.c_uint64 * (ACCT_SIZE // 8)).from_buffer(m)


def _get(m, off):
    return m[off // 8]


def _put(m, off, v):
    m[off // 8] = v


def _add(m, off, n=1):
    _put(m, off, _get(m, off) + n)  # only under the lock or by one writer at a time


# -- workers (forked by the forkserver) ------------------------------------------------------

def lock_worker(zone, acct_path, inst):
    m = _acct(acct_path)
    lk = zone.lock("kill-lock")
    me = os.getpid()
    rnd = random.Random(me)
    while not _get(m, STOP):
        with lk:
            holder = _get(m, HOLDER)
            if holder and lk.owner_died and not _alive(holder):
                holder = 0  # the dead holder's mark: the repair owner_died asks for
            if holder:
                _add(m, VIOLATIONS)  # a second holder (a live one, or no owner_died)
                _put(m, LAST_VIOLATION, holder)
            _put(m, HOLDER, me)
            v = _get(m, COUNTER)
            for _ in range(rnd.randrange(200)):  # a few microseconds inside
                pass
            _put(m, COUNTER, v + 1)
            _put(m, HOLDER, 0)
        _put(m, ACKS + 8 * inst, _get(m, ACKS + 8 * inst) + 1)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:   # a zombie is dead
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def message(inst, seq):
    n = (seq * 7 + inst * 13) % 300
    body = struct.pack("<IQ", inst, seq) + bytes([seq & 0xff]) * n
    return body + struct.pack("<I", zlib.crc32(body))


def check_message(raw):
    if len(raw) < 16:
        return None
    body, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
    if zlib.crc32(body) != crc:
        return None
    inst, seq = struct.unpack_from("<IQ", body)
    if raw != message(inst, seq):
        return None
    return inst, seq


def producer(zone, acct_path, inst):
    from shmkit import QueueFull
    m = _acct(acct_path)
    q = zone.queue("kill-queue")
    seq = 0
    while not _get(m, STOP):
        try:
            q.put(message(inst, seq), timeout=0.1)
        except QueueFull:
            continue
        seq += 1
        _put(m, ACKS + 8 * inst, seq)  # messages 0 .. seq-1 are acknowledged


def consumer(zone, acct_path, log_path):
    from shmkit import QueueEmpty
    m = _acct(acct_path)
    q = zone.queue("kill-queue")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while not _get(m, STOP_CONS):
        try:
            raw = q.get(timeout=0.05)
        except QueueEmpty:
            continue
        got = check_message(raw)
        if got is None:
            _add(m, TORN)  # races with other consumers only if there is a torn message
            continue
        os.write(fd, struct.pack("<IQ", *got))


KEYS = 40


def value(group, i, version):
    n = (version * 13 + i) % 400
    body = struct.pack("<IIQ", group, i, version) + bytes([version & 0xff]) * n
    return body + struct.pack("<I", zlib.crc32(body))


def check_value(raw, group, i):
    if not isinstance(raw, bytes) or len(raw) < 20:
        return False
    body, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
    if zlib.crc32(body) != crc:
        return False
    g, k, v = struct.unpack_from("<IIQ", body)
    return (g, k) == (group, i) and raw == value(group, i, v)


WRITER = 8192        # u64 per group: pid of the writer that owns it now


def dict_writer(zone, acct_path, group):
    m = _acct(acct_path)
    d = zone.dict("kill-dict")
    me = os.getpid()
    if _get(m, WRITER + 8 * group) and _alive(_get(m, WRITER + 8 * group)):
        _add(m, OVERLAP)
    _put(m, WRITER + 8 * group, me)
    p = _get(m, ACKS + 8 * group)  # go on from the last acknowledged position
    while not _get(m, STOP):
        v, i = divmod(p, KEYS)
        d[f"g{group}-{i}"] = value(group, i, v)
        p += 1
        _put(m, ACKS + 8 * group, p)


def dict_reader(zone, acct_path, groups):
    m = _acct(acct_path)
    d = zone.dict("kill-dict")
    rnd = random.Random(os.getpid())
    while not _get(m, STOP):
        g, i = rnd.randrange(groups), rnd.randrange(KEYS)
        raw = d.get(f"g{g}-{i}")
        if raw is not None and not check_value(raw, g, i):
            _add(m, TORN)


# -- the campaign --------------------------------------------------------------------------

class _Workers:
    """Processes of one part: start, kill a random one, replace it."""

    def __init__(self, ctx, rnd):
        self.ctx, self.rnd = ctx, rnd
        self.live = []          # (role, process, restart)
        self.kills = Counter()
        self.died = []          # (role, exit code) of workers that ended by themselves

    def start(self, role, target, args, restart):
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.live.append((role, p, restart))
        return p

    def kill_one(self, roles=None):
        cand = [x for x in self.live if roles is None or x[0] in roles]
        if not cand:
            return
        role, p, restart = self.rnd.choice(cand)
        try:
            os.kill(p.pid, signal.SIGKILL)
            self.kills[role] += 1
        except ProcessLookupError:
            pass
        p.join(10)
        if p.exitcode != -signal.SIGKILL:  # it ended before we killed it: a finding
            self.died.append((role, p.exitcode))
            self.kills[role] -= 1 if self.kills[role] else 0
        self.live.remove((role, p, restart))
        restart()

    def join_all(self, timeout=15.0) -> list:
        end = time.monotonic() + timeout
        hung = []
        for role, p, _ in self.live:
            p.join(max(0.1, end - time.monotonic()))
            if p.is_alive():
                hung.append(role)
                p.kill()
                p.join(5)
        self.live = []
        return hung + [f"{role} ended by itself with {code}" for role, code in self.died]


def _kill_loop(w: _Workers, end: float, rnd: random.Random, roles=None):
    while time.monotonic() < end:
        time.sleep(rnd.uniform(0.005, 0.04))
        w.kill_one(roles)


def part_locks(ctx, zone, acct_path, m, seconds, rnd, rep):
    w = _Workers(ctx, rnd)
    nxt = [0]

    def spawn():
        inst = nxt[0]
        nxt[0] += 1
        w.start("holder", lock_worker, (zone, acct_path, inst), spawn)

    for _ in range(3):
        spawn()
    _kill_loop(w, deadline_after(seconds), rnd)
    _put(m, STOP, 1)
    hung = w.join_all()
    acked = sum(_get(m, ACKS + 8 * i) for i in range(nxt[0]))
    counter = _get(m, COUNTER)
    kills = sum(w.kills.values())
    lk = zone.lock("kill-lock")
    free_at_end = lk.acquire(timeout=5)
    if free_at_end:
        lk.release()
    st = lk.statistics()
    row = {"part": "locks", "kills": kills, "acked": acked, "done": counter,
           "done-acked": counter - acked, "violations": _get(m, VIOLATIONS),
           "owner_deaths": st.owner_deaths}
    rep.rows.append(row)
    if not 0 <= counter - acked <= kills:
        rep.findings.append({"part": "locks", "what": "increments done minus acknowledged is "
                             "outside [0, kills]", **row})
    if row["violations"]:
        rep.findings.append({"part": "locks", "what": "two holders at once", **row})
    if not free_at_end or hung:
        rep.findings.append({"part": "locks", "what": "lock not free at the end / workers hung",
                             "hung": hung})


def part_queue(ctx, zone, acct_path, m, seconds, rnd, rep, logdir):
    from shmkit import QueueEmpty
    q = zone.queue("kill-queue", 64 << 10)
    w = _Workers(ctx, rnd)
    nxt = [0]
    logs = []

    def spawn_producer():
        inst = nxt[0]
        nxt[0] += 1
        w.start("producer", producer, (zone, acct_path, inst), spawn_producer)

    def spawn_consumer():
        path = os.path.join(logdir, f"consumer-{len(logs)}")
        logs.append(path)
        w.start("consumer", consumer, (zone, acct_path, path), spawn_consumer)

    for _ in range(2):
        spawn_producer()
        spawn_consumer()
    _kill_loop(w, deadline_after(seconds), rnd)
    _put(m, STOP, 1)                      # producers stop; consumers drain
    prods = [x for x in w.live if x[0] == "producer"]
    for _, p, _ in prods:
        p.join(15)
    end = time.monotonic() + 15
    while q.qsize() and time.monotonic() < end:
        time.sleep(0.01)
    _put(m, STOP_CONS, 1)
    hung = w.join_all()
    delivered = Counter()
    for path in logs:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        for k in range(0, len(data) - len(data) % 12, 12):
            delivered[struct.unpack_from("<IQ", data, k)] += 1
    while True:                           # what is left is the parent's to take
        try:
            got = check_message(q.get_nowait())
        except QueueEmpty:
            break
        if got is None:
            _add(m, TORN)
        else:
            delivered[got] += 1
    st = q.statistics()
    acked = {i: _get(m, ACKS + 8 * i) for i in range(nxt[0])}
    dups = sum(c - 1 for c in delivered.values() if c > 1)
    phantom = [k for k in delivered if k[1] > acked.get(k[0], -1)]
    unacked_delivered = sum(1 for k in delivered if k[1] == acked.get(k[0], -1))
    missing = sum(1 for i, a in acked.items() for s in range(a) if (i, s) not in delivered)
    allowance = st.dropped_gets + w.kills["consumer"]
    row = {"part": "queue", "kills": dict(w.kills), "acked": sum(acked.values()),
           "delivered": sum(delivered.values()), "unacked delivered": unacked_delivered,
           "missing acked": missing, "dropped_gets": st.dropped_gets,
           "dropped_puts": st.dropped_puts, "duplicates": dups, "phantom": len(phantom),
           "torn": _get(m, TORN), "recoveries": st.recoveries}
    rep.rows.append(row)
    if dups or phantom or _get(m, TORN):
        rep.findings.append({"part": "queue", "what": "duplicate, phantom or torn message",
                             **row, "phantom_examples": phantom[:5]})
    if missing > allowance:
        rep.findings.append({"part": "queue", "what": "acknowledged messages lost beyond "
                             "dropped_gets + consumer kills", "allowance": allowance, **row})
    if unacked_delivered > w.kills["producer"]:
        rep.findings.append({"part": "queue", "what": "more unacknowledged deliveries than "
                             "producer kills", **row})
    if hung:
        rep.findings.append({"part": "queue", "what": "workers did not stop", "hung": hung})
    _put(m, TORN, 0)


def part_dict(ctx, zone, acct_path, m, seconds, rnd, rep):
    groups = 2
    d = zone.dict("kill-dict", 4 << 20, shards=4)
    w = _Workers(ctx, rnd)

    def spawner(g):
        def spawn():
            w.start("writer", dict_writer, (zone, acct_path, g), spawn)
        return spawn

    for g in range(groups):
        spawner(g)()

    def spawn_reader():
        w.start("reader", dict_reader, (zone, acct_path, groups), spawn_reader)

    spawn_reader()
    _kill_loop(w, deadline_after(seconds), rnd, roles=("writer", "writer", "reader"))
    _put(m, STOP, 1)
    hung = w.join_all()
    wrong = []
    writes = 0
    for g in range(groups):
        pos = _get(m, ACKS + 8 * g)
        writes += pos
        for i in range(KEYS):
            last = pos - 1 - ((pos - 1 - i) % KEYS) if pos > i else None
            got = d.get(f"g{g}-{i}")
            want = value(g, i, last // KEYS) if last is not None else None
            # position `pos` may have been written by a writer killed before it could
            # acknowledge it, whose replacement then saw STOP before writing it again
            in_flight = value(g, i, pos // KEYS) if pos % KEYS == i else None
            if got != want and got != in_flight:
                have = (struct.unpack_from("<IIQ", got)[2] if isinstance(got, bytes)
                        and len(got) >= 16 else repr(got)[:40])
                wrong.append({"key": f"g{g}-{i}", "last acked position": last,
                              "want version": None if last is None else last // KEYS,
                              "got version": have,
                              "got is intact": check_value(got, g, i)})
    st = d.statistics()
    row = {"part": "dict", "kills": dict(w.kills), "acked writes": writes,
           "keys wrong at the end": len(wrong), "torn reads": _get(m, TORN),
           "overlapping writers": _get(m, OVERLAP),
           "evictions": st.evictions, "recoveries": st.recoveries}
    rep.rows.append(row)
    if wrong or _get(m, TORN) or st.evictions or hung:
        rep.findings.append({"part": "dict", "what": "lost/torn value, eviction or hang",
                             **row, "wrong_examples": wrong[:5], "hung": hung})


def run(seconds: float, seed: int) -> Report:
    import multiprocessing as mp
    import shutil
    import tempfile

    import shmkit

    rep = Report("kill", seed, seconds)
    rnd = random.Random(seed)
    clean = Cleanup()
    zone = None
    logdir = tempfile.mkdtemp(prefix="shmkit-kill-")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["shmkit", "shmkit.sync", "shmkit.queue", "shmkit.dict",
                                "tests.campaigns.kill"])
    try:
        zone = shmkit.Zone(clean.name("zone"), 32 << 20)
        parts = [("locks", part_locks), ("queue", part_queue), ("dict", part_dict)]
        for label, part in parts:
            acct_path = os.path.join(SHM_DIR, clean.name(f"acct-{label}"))
            fd = os.open(acct_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, ACCT_SIZE)
            os.close(fd)
            m = _acct(acct_path)
            args = (ctx, zone, acct_path, m, seconds / len(parts), rnd, rep)
            part(*args, logdir) if label == "queue" else part(*args)
            del m
        rep.figures["kills"] = sum(sum(r["kills"].values()) if isinstance(r["kills"], dict)
                                   else r["kills"] for r in rep.rows)
    finally:
        if zone is not None:
            zone.close()
        shutil.rmtree(logdir, ignore_errors=True)
        left = clean.run()
        stray = [n for n in left["shm"] if "-zone-" not in n and "-acct-" not in n]
        if stray:
            rep.notes.append(f"removed after the run: {stray}")
    return rep

"""Corruption fuzz: random mutations of a zone holding every object kind, then every
operation on every object in a fresh process.

    python -m tests.campaigns corrupt --seconds 600 --seed 7 [--sanitize] [--json out.json]

A template zone (2 MiB) holding every kind of object, each with some state (messages in
the queues, items of every value type in the dict, a published board, a set event...)
is built once by a separate process.  Each trial copies its bytes into a fresh /dev/shm
object, applies 1-4 mutations - 70 % inside headers (the zone header, the page
descriptors, the directory, each object's own header, as laid out in core/layout.h), 30
% anywhere in the zone - and then a fresh process (forked from a zygote that has opened
nothing) attaches the zone and runs every operation on every object: first the ones that
only read, then the ones that write, every blocking call with a timeout of a few ms.
The trial is classified by how that process ended:

    ok          every operation returned
    exception   some raised shmkit's own exceptions (the expected answer to corruption)
    raw         an exception that is neither shmkit's nor a documented builtin escaped
                (pickle's own errors while decoding a corrupted *payload* are "payload")
    signal      the process died of a signal (SIGSEGV, SIGBUS, SIGABRT...)
    hang        it did not finish within the trial's time (5 s for ~50 ms of work)

A hang of a call WITHOUT a timeout whose mutations touched the owner word of one of
shmkit's own locks, or the lock word of a pthread mutex, is listed apart, not as a
finding: an owner that names a live thread or process is waited for, as documented (such
a call, e.g. opening an object, Barrier.reset or Condition.wait taking its lock back,
waits until Ctrl-C; an owner that does not exist is taken over).  The trial marks which
stage of an operation runs (``label [stage]``), so a hang is excused only in a stage that
has no timeout: calls with a timeout carry their deadline to the internal mutexes (issue
13 #6) and a hang of one is a finding.  Every other signal, hang or raw exception is a
finding: corrupted mutex kinds, the rest of a mutex and queue positions included (issue
13 #3, #6 and #7 are fixed).

With ``--sanitize`` the trials run against an ASan/UBSan build of shmkit (built into
build/campaign-sanitize/ on first use), and during the read-only operations the zone's
free pages are poisoned (``__asan_poison_memory_region``): a read that stays inside the
mapping but outside every object is then caught too.  Under ``make sanitize`` the trials
inherit its sanitizer environment the same way.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
from collections import Counter

from ._common import Cleanup, Report, SHM_DIR, deadline_after

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZONE_SIZE = 2 << 20
TRIAL_TIMEOUT = 5.0
PAGE = 4096

# glibc's pthread_mutex_t (x86-64 and aarch64): 40 and 48 bytes; its size is part of the
# zone's format word, so a build on another libc refuses the template anyway
MUTEX_BYTES = 48

NAMES = ["raw", "lock", "rlock", "rwlock", "sem", "semu", "bsem", "event", "cond",
         "barrier", "value", "array", "counter", "queue", "oqueue", "dict", "nd", "board",
         "aboard", "config"]


# -- the template (built in its own process) ----------------------------------------------

def build(name: str) -> dict:
    """Create zone ``name`` with every object kind and return its map (printed as JSON
    when run as a script)."""
    import numpy as np

    import shmkit
    z = shmkit.Zone(name, ZONE_SIZE)
    z.create("raw", 1000)
    z.lock("lock")
    z.rlock("rlock")
    z.rwlock("rwlock", max_readers=8)
    z.semaphore("sem", 2)
    z.semaphore("semu", 2, undo=True, max_processes=8)
    z.bounded_semaphore("bsem", 3)
    z.event("event").set()
    z.condition("cond")
    z.barrier("barrier", 2)
    z.value("value", "i", 7)
    z.array("array", "d", [1.0, 2.0, 3.0])
    z.counter("counter", 5)
    q = z.queue("queue", 16 << 10)
    for i in range(12):
        q.put(bytes([i]) * (i * 37 % 300))
    oq = z.queue("oqueue", 16 << 10, mode="objects")
    oq.put({"a": 1, "b": [1, 2, 3]})
    oq.put(np.arange(64, dtype="int32"))
    d = z.dict("dict", 128 << 10, shards=2)
    d["bytes"] = b"x" * 100
    d["str"] = "héllo" * 20
    d["int"] = 42
    d["big"] = 1 << 100
    d["float"] = 2.5
    d["none"] = None
    d["true"] = True
    d["obj"] = {"k": (1, 2)}
    d.set("ttl", b"soon", ttl=3600)
    for i in range(40):
        d[f"k{i}"] = b"v" * (i * 13 % 200)
    d.lpush("list", b"a")
    d.rpush("list", b"b")
    a = z.ndarray("nd", (8, 8), "float32")
    a[:] = 1.5
    b = z.board("board", 256)
    b.publish(b"board value")
    b.publish({"k": "v"})
    ab = z.board("aboard", 4096)
    ab.publish(np.ones((4, 4), dtype="float64"))
    c = z.config("config", 4096)
    c.publish({"name": "shmkit", "n": 3})
    info = {o.name: {"type": o.type, "offset": o.offset, "size": o.size}
            for o in z.objects()}
    buf = z.segment.buf
    regions, mutexes, positions, owners = [], [], [], []

    def region(start, end, weight, label):
        end = min(end, ZONE_SIZE)
        if end > start:
            regions.append([start, end, weight, label])

    region(0, 2688, 30, "zone header")
    region(2688, PAGE, 2, "zone header padding")
    mutexes.append([640, 640 + MUTEX_BYTES, "zone mutex"])
    start, end, desc_off, pages_off, first, npages = struct.unpack_from("<QQQQII", buf, 768)
    region(desc_off, desc_off + npages * 24, 20, "page descriptors")
    dir_off = struct.unpack_from("<Q", buf, 256)[0]
    cap = struct.unpack_from("<I", buf, dir_off + 4)[0]
    region(dir_off, dir_off + 64 + cap * 128, 15, "directory")
    for n, o in info.items():
        off, size, t = o["offset"], o["size"], o["type"]
        head = {"queue": 512 + 256 * 128 + 64 * 32, "board": 320 + 64 * 16,
                "ndarray": 512, "dict": 256}.get(t, 256)
        region(off, off + min(size, head), 6 if t in ("queue", "dict", "board") else 3,
               f"{t} header")
        if t == "queue":
            positions.append([off + 64, off + 80, f"{n} tail"])
            positions.append([off + 128, off + 144, f"{n} head"])
            for s in range(4):
                positions.append([off + 512 + s * 128 + 16, off + 512 + s * 128 + 56,
                                  f"{n} slot {s} claims"])
            mutexes.append([off + 384, off + 384 + MUTEX_BYTES, f"{n} repair mutex"])
        elif t == "board":
            mutexes.append([off + 192, off + 192 + MUTEX_BYTES, f"{n} mutex"])
        elif t in ("semaphore", "barrier"):
            mutexes.append([off + 64, off + 64 + MUTEX_BYTES, f"{n} mutex"])
        elif t == "dict":
            nshards = struct.unpack_from("<I", buf, off + 12)[0]
            shards_off = struct.unpack_from("<Q", buf, off + 40)[0]
            region(off + shards_off, off + shards_off + 512 * nshards, 6, "dict shards")
            for i in range(nshards):
                s0 = off + shards_off + 512 * i
                mutexes.append([s0, s0 + MUTEX_BYTES, f"dict shard {i} mutex"])
        # the owner identities of shmkit's own locks (layout.h, union shk_ident)
        if t in ("lock", "rlock"):
            owners.append([off + 16, off + 32, f"{n} owner"])
        elif t == "rwlock":
            owners.append([off + 16, off + 24, f"{n} writer"])
            owners.extend([off + 128 + 64 * i, off + 140 + 64 * i, f"{n} reader slot {i}"]
                          for i in range(8))
        elif t in ("value", "array"):
            owners.append([off + 112 + 16, off + 112 + 32, f"{n} lock owner"])
        elif t == "condition":
            owners.append([off + 128 + 16, off + 128 + 32, f"{n} lock owner"])
        elif t == "semaphore":
            owners.extend([off + 192 + 16 * i, off + 204 + 16 * i, f"{n} undo slot {i}"]
                          for i in range(8))
        elif t == "barrier":
            owners.append([off + 128, off + 144, f"{n} arrivals"])
    # free pages (for the sanitizer: nothing may read them)
    free_pages = []
    i = 0
    while i < npages:
        dslab, _, _, dtype = struct.unpack_from("<QIIH", buf, desc_off + 24 * i)
        if dtype == 0 and dslab >= 1:  # SHK_PT_FREE: a free run of dslab pages
            free_pages.append([pages_off + i * PAGE, pages_off + (i + int(dslab)) * PAGE])
            i += int(dslab)
        else:
            i += 1
    used_end = pages_off + npages * PAGE
    del buf
    z.close()
    return {"objects": info, "regions": regions, "mutexes": mutexes,
            "positions": positions, "owners": owners, "free": free_pages,
            "used_end": used_end}


# -- mutations (in the campaign's process: plain bytes) -------------------------------------

INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
               PAGE, PAGE - 1, ZONE_SIZE, ZONE_SIZE + PAGE, 1 << 32, (1 << 63) - 1, 1 << 63,
               (1 << 64) - 1, (1 << 64) - PAGE]


def mutate(buf: bytearray, tmap: dict, rnd: random.Random) -> list[dict]:
    regions = tmap["regions"]
    weights = [r[2] for r in regions]
    out = []
    for _ in range(rnd.choice((1, 1, 1, 2, 2, 3, 4))):
        if rnd.random() < 0.7:
            start, end, _, label = rnd.choices(regions, weights)[0]
        else:
            start, end, label = 0, tmap["used_end"], "anywhere"
        off = rnd.randrange(start, end)
        kind = rnd.choice(("byte", "bit", "u32", "u64", "u64", "copy8", "zero8"))
        if kind == "byte":
            v = rnd.randrange(256)
            buf[off] = v
        elif kind == "bit":
            v = 1 << rnd.randrange(8)
            buf[off] ^= v
        elif kind == "u32":
            off &= ~3
            v = rnd.choice(INTERESTING) & 0xffffffff if rnd.random() < 0.7 else rnd.getrandbits(32)
            struct.pack_into("<I", buf, off, v)
        elif kind == "u64":
            off &= ~7
            v = rnd.choice(INTERESTING) if rnd.random() < 0.7 else rnd.getrandbits(64)
            struct.pack_into("<Q", buf, off, v)
        elif kind == "copy8":
            off &= ~7
            src = rnd.randrange(0, tmap["used_end"] - 8) & ~7
            v = src
            buf[off:off + 8] = buf[src:src + 8]
        else:
            off &= ~7
            v = 0
            buf[off:off + 8] = bytes(8)
        width = {"byte": 1, "bit": 1, "u32": 4}.get(kind, 8)
        out.append({"off": off, "end": off + width, "kind": kind, "value": v, "region": label})
    return out


def untimed(where: str) -> bool:
    """Did the hang happen in a call that has no timeout?  (``where``: the trial's last
    progress line, ``label`` or ``label [stage]``.)"""
    return UNTIMED in where or where.split(" [")[0] not in TIMED_OPS


def attribute(muts: list[dict], tmap: dict, where: str = "") -> str | None:
    """The documented cause of a hang a mutation set may trigger, or None.  Only a call
    without a timeout may wait for a live thread or process named as a holder: the
    internal mutexes honour the deadline of the call in progress (issue 13 #6), so a hang
    of a timed call is a finding whatever the mutation."""
    if not untimed(where):
        return None
    for m in muts:
        for a, b, label in tmap["mutexes"]:
            if m["off"] < a + 4 and m["end"] > a:  # the lock word: owner id and flags
                return f"mutex lock word ({label})"
    for m in muts:
        for a, b, label in tmap["owners"]:
            if m["off"] < b and m["end"] > a:
                return f"lock owner word ({label})"
    return None


# -- the trial (in a process forked from the zygote) ----------------------------------------

def _allowed(e: BaseException) -> bool:
    import shmkit
    if isinstance(e, shmkit.ShmkitError):
        return True
    if isinstance(e, UnicodeError):
        return False
    return isinstance(e, (TypeError, ValueError, IndexError, KeyError, BufferError,
                          PermissionError, TimeoutError))


UNTIMED = "no timeout"  # the stage mark of a call that has no timeout

# operations whose calls all have a timeout (the zone's open, timeout=0.5; the cycles of
# the blocking objects, T) except the stages they mark UNTIMED (opening an object,
# Barrier.reset, Condition.wait taking its lock back); every other operation has none
TIMED_OPS = frozenset({"open", "lock.cycle", "rlock.cycle", "rwlock.cycle", "sem.cycle",
                       "semu.cycle", "bsem.cycle", "event.cycle", "cond.cycle",
                       "barrier.cycle", "queue.cycle", "oqueue.cycle"})


def _ops(z, mark=lambda stage: None):
    """(label, phase, function): phase "r" only reads shared memory, "w" may write.
    ``mark(stage)`` says which stage of the operation runs (shown in the trial's progress
    as ``label [stage]``; "" for the operation itself): a hang is attributed to a stage
    that has no timeout when marked UNTIMED or outside TIMED_OPS."""
    import shmkit
    T = 0.005

    def get(factory, *a, **kw):
        mark("open, " + UNTIMED)  # opening takes the zone's mutex, without a deadline
        obj = factory(*a, create=False, **kw)
        mark("")
        return obj

    def lock_cycle(lk):
        if lk.acquire(timeout=T):
            lk.release()

    def rw_cycle(rw):
        if rw.acquire_read(timeout=T):
            rw.release_read()
        if rw.acquire_write(timeout=T):
            rw.release_write()

    def sem_cycle(s):
        if s.acquire(timeout=T):
            s.release()

    def cond_cycle(c):
        if c.acquire(timeout=T):
            try:
                mark("wait: takes its lock back, " + UNTIMED)
                c.wait(T)
                mark("")
                c.notify_all()
            finally:
                c.release()

    def barrier_cycle(b):
        try:
            b.wait(T)
        except shmkit.BrokenBarrierError:
            pass
        mark("reset, " + UNTIMED)
        b.reset()

    def queue_cycle(q):
        q.put(b"fuzz", timeout=T)
        q.get(timeout=T)
        q.put_many([b"a", b"bb"], timeout=T)
        q.get_many(4, timeout=T)

    def oqueue_cycle(q):
        q.put({"x": 1}, timeout=T)
        q.get(timeout=T)

    def dict_read(d):
        for k in ("bytes", "str", "int", "big", "float", "none", "obj", "ttl", "k7", "list"):
            d.get(k)
        list(d.keys())
        len(d)
        d.free_space()
        d.statistics()

    def dict_write(d):
        d["new"] = b"n" * 50
        d.incr("int", 1)
        d.set("k3", "replaced" * 10)
        d.delete("k5")
        d.lpush("list", b"c")
        d.rpop("list")
        d.flush_expired()

    def nd_read(a):
        float(a.sum())

    def board_read(b):
        b.read()
        b.wait(0, timeout=T)
        b.statistics()

    def board_write(b):
        b.publish(b"fuzzed value")
        b.read()

    yield "zone.check", "r", z.check
    yield "zone.stats", "r", z.stats
    yield "zone.objects", "r", z.objects
    for n in NAMES:
        yield f"zone.find({n})", "r", (lambda n=n: z.find(n))
    yield "lock.statistics", "r", lambda: get(z.lock, "lock").statistics()
    yield "rlock.statistics", "r", lambda: get(z.rlock, "rlock").statistics()
    yield "rwlock.statistics", "r", lambda: get(z.rwlock, "rwlock").statistics()
    yield "sem.value", "r", lambda: get(z.semaphore, "sem").value
    yield "event.is_set", "r", lambda: get(z.event, "event").is_set()
    yield "value.read", "r", lambda: get(z.value, "value", "i").value
    yield "array.read", "r", lambda: get(z.array, "array", "d", 3)[:]
    yield "counter.read", "r", lambda: get(z.counter, "counter").value
    yield "queue.statistics", "r", lambda: (get(z.queue, "queue").statistics(),
                                            get(z.queue, "queue").qsize())
    yield "dict.read", "r", lambda: dict_read(get(z.dict, "dict"))
    yield "dict.check", "r", lambda: get(z.dict, "dict").check()
    yield "ndarray.read", "r", lambda: nd_read(get(z.ndarray, "nd", (8, 8), "float32"))
    yield "board.read", "r", lambda: board_read(get(z.board, "board", None))
    yield "aboard.read", "r", lambda: get(z.board, "aboard", None).read()
    yield "config.read", "r", lambda: dict(z.config("config", None))  # None: attach only
    # writers
    yield "lock.cycle", "w", lambda: lock_cycle(get(z.lock, "lock"))
    yield "rlock.cycle", "w", lambda: lock_cycle(get(z.rlock, "rlock"))
    yield "rwlock.cycle", "w", lambda: rw_cycle(get(z.rwlock, "rwlock"))
    yield "sem.cycle", "w", lambda: sem_cycle(get(z.semaphore, "sem"))
    yield "semu.cycle", "w", lambda: sem_cycle(get(z.semaphore, "semu", undo=True))
    yield "bsem.cycle", "w", lambda: sem_cycle(get(z.bounded_semaphore, "bsem"))
    yield "event.cycle", "w", lambda: (get(z.event, "event").wait(T), get(z.event, "event").set())
    yield "cond.cycle", "w", lambda: cond_cycle(get(z.condition, "cond"))
    yield "barrier.cycle", "w", lambda: barrier_cycle(get(z.barrier, "barrier", 2))
    yield "value.write", "w", lambda: setattr(get(z.value, "value", "i"), "value", 9)
    yield "counter.add", "w", lambda: get(z.counter, "counter").add(1)
    yield "queue.cycle", "w", lambda: queue_cycle(get(z.queue, "queue"))
    yield "oqueue.cycle", "w", lambda: oqueue_cycle(get(z.queue, "oqueue", mode="objects"))
    yield "dict.write", "w", lambda: dict_write(get(z.dict, "dict"))
    yield "ndarray.write", "w", lambda: get(z.ndarray, "nd", (8, 8), "float32").fill(2.0)
    yield "board.write", "w", lambda: board_write(get(z.board, "board", None))
    yield "zone.alloc", "w", lambda: z.free(z.alloc(3000))
    yield "zone.create", "w", lambda: z.create("fuzz-new", 5000)
    yield "zone.destroy", "w", lambda: z.destroy("raw")
    yield "zone.check again", "r", z.check


_PAYLOAD_OPS = ("oqueue.cycle", "dict.read", "dict.write", "board.read", "aboard.read",
                "config.read", "board.write")


def _poisoner(z, free_ranges):
    """Poison the free pages (ASan builds only): (poison, unpoison) or None."""
    import ctypes
    try:
        lib = ctypes.CDLL(None)
        poison = lib.__asan_poison_memory_region
        unpoison = lib.__asan_unpoison_memory_region
    except (OSError, AttributeError):
        return None
    poison.argtypes = unpoison.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    mv = z.segment.buf
    base = ctypes.addressof(ctypes.c_char.from_buffer(mv))
    size = len(mv)
    ranges = [(a, b) for a, b in free_ranges if b <= size]

    def on():
        for a, b in ranges:
            poison(base + a, b - a)

    def off():
        for a, b in ranges:
            unpoison(base + a, b - a)
    return on, off, mv


def run_trial(progress, name: str, free_ranges: list, poison: bool) -> dict:
    """Attach zone ``name`` and run every operation; returns {op: outcome}."""
    import shmkit
    results = {}
    progress("open")
    try:
        z = shmkit.Zone(name, 0, create=False, timeout=0.5)
    except BaseException as e:
        results["zone.open"] = _outcome("zone.open", e)
        return results
    results["zone.open"] = "ok"
    pz = _poisoner(z, free_ranges) if poison else None
    if pz:
        pz[0]()
    poisoned = pz is not None
    try:
        current = ["open"]

        def mark(stage: str) -> None:
            progress(f"{current[0]} [{stage}]" if stage else current[0])

        for label, phase, fn in _ops(z, mark):
            if phase == "w" and poisoned:
                pz[1]()
                poisoned = False
            current[0] = label
            progress(label)
            try:
                fn()
                results[label] = "ok"
            except BaseException as e:
                results[label] = _outcome(label, e)
    finally:
        if poisoned:
            pz[1]()
        if pz:
            pz[2].release()
    progress("close")
    try:
        z.close()
    except Exception:
        pass
    return results


def _outcome(label: str, e: BaseException) -> str:
    if _allowed(e):
        return "exc:" + type(e).__name__
    if label in _PAYLOAD_OPS and _from_unpickling(e):
        return "payload:" + type(e).__name__
    return f"raw:{type(e).__name__}: {str(e)[:120]}"


def _from_unpickling(e: BaseException) -> bool:
    """Raised by pickle while decoding a (corrupted) pickled value: a payload's bytes are
    data, and pickle.loads answers bad data with any exception, MemoryError included."""
    if isinstance(e, SystemError):
        return False
    import pickle
    if isinstance(e, pickle.UnpicklingError):
        return True  # the dict binding calls pickle.loads from C: no Python frame of it
    tb, last = e.__traceback__, None
    while tb is not None:
        last = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return last in ("_decode_pickle", "_decode", "_loads", "loads", "_unpickle", "decode")


# -- the campaign ---------------------------------------------------------------------------

def sanitizer_env() -> dict:
    """The environment of a zygote running an ASan/UBSan build of shmkit (built into
    build/campaign-sanitize/ when missing or older than the sources)."""
    cc = os.environ.get("CC", "gcc")
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not libasan or not os.path.exists(libasan):
        raise RuntimeError("libasan.so not found (gcc with AddressSanitizer is needed)")
    out = os.path.join(REPO, "build", "campaign-sanitize")
    pkg = os.path.join(out, "pkg")
    srcs = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(REPO, "src", "shmkit"))
            for f in fs if f.endswith((".c", ".h", ".py"))]
    stamp = os.path.join(out, "stamp")
    newest = max(os.path.getmtime(p) for p in srcs)
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < newest:
        import shutil
        shutil.rmtree(pkg, ignore_errors=True)
        env = dict(os.environ, SHMKIT_SANITIZE="1")
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", pkg,
                        "--build-temp", os.path.join(out, "tmp"), "--force"],
                       cwd=REPO, env=env, check=True, capture_output=True)
        for dp, _, fs in os.walk(os.path.join(REPO, "src", "shmkit")):
            rel = os.path.relpath(dp, os.path.join(REPO, "src"))
            os.makedirs(os.path.join(pkg, rel), exist_ok=True)
            for f in fs:
                if f.endswith(".py") or f == "py.typed":
                    shutil.copy2(os.path.join(dp, f), os.path.join(pkg, rel, f))
        with open(stamp, "w") as f:
            f.write("built\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg, REPO])
    env["LD_PRELOAD"] = libasan
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:allow_user_poisoning=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


def run(seconds: float, seed: int, sanitize: bool = False, workers: int = 2,
        progress_every: float = 30.0) -> Report:
    rep = Report("corrupt", seed, seconds)
    clean = Cleanup()
    zygotes = []
    try:
        template = clean.name("template")
        r = subprocess.run([sys.executable, "-c",
                            "import json, sys; from tests.campaigns.corrupt import build; "
                            "print(json.dumps(build(sys.argv[1])))", template],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"building the template failed:\n{r.stderr}")
        tmap = json.loads(r.stdout.strip().splitlines()[-1])
        with open(os.path.join(SHM_DIR, template), "rb") as f:
            base = f.read()
        os.unlink(os.path.join(SHM_DIR, template))
        env = sanitizer_env() if sanitize else None
        poison = sanitize or "asan" in os.environ.get("LD_PRELOAD", "")
        preload = ("shmkit", "shmkit.zone", "shmkit.sync", "shmkit.queue", "shmkit.dict",
                   "shmkit.board", "shmkit.config", "shmkit.shared_array", "numpy",
                   "tests.campaigns.corrupt")
        from ._zygote import Zygote
        import threading
        zygotes = [Zygote(env=env, preload=preload, cwd=REPO) for _ in range(max(1, workers))]
        outcomes, kinds, causes = Counter(), Counter(), Counter()
        ops_exc, ops_raw = Counter(), Counter()
        lock = threading.Lock()
        end = deadline_after(seconds)
        counter = iter(range(1 << 62))
        last_print = [time.monotonic()]

        def worker(zg):
            while time.monotonic() < end:
                with lock:
                    i = next(counter)
                tseed = seed * 1_000_003 + i
                rnd = random.Random(tseed)
                buf = bytearray(base)
                muts = mutate(buf, tmap, rnd)
                name = clean.name("t")
                path = os.path.join(SHM_DIR, name)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, buf)
                finally:
                    os.close(fd)
                try:
                    res = zg.run("tests.campaigns.corrupt:run_trial",
                                 [name, tmap["free"], poison], TRIAL_TIMEOUT)
                finally:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                how, cls = res["how"], None
                ops = res["result"] or {}
                if how == "ok":
                    bad = [f"{k}: {v}" for k, v in ops.items() if v.startswith("raw:")]
                    if bad:
                        cls = "raw"
                    elif any(v.startswith(("exc:", "payload:")) for v in ops.values()):
                        cls = "exception"
                    else:
                        cls = "ok"
                elif how == "exit":
                    cls, bad = "raw", [f"trial process exited {res['code']}: "
                                       f"{res['stderr'][-300:]}"]
                else:
                    cls = how
                    bad = []
                with lock:
                    outcomes[cls] += 1
                    for k, v in ops.items():
                        if v.startswith("exc:") or v.startswith("payload:"):
                            ops_exc[v.split(":")[0]] += 1
                        elif v.startswith("raw:"):
                            ops_raw[f"{k} {v[4:60]}"] += 1
                    if cls in ("signal", "hang", "raw"):
                        where = (res["progress"] or ["?"])[-1]
                        why = attribute(muts, tmap, where) if cls == "hang" else None
                        kind = f"{cls} in {where}" + (f" (signal {res['code']})"
                                                       if cls == "signal" else "")
                        kinds[kind] += 1
                        if why:
                            causes[why.split(" (")[0]] += 1
                        else:
                            rep.findings.append({
                                "trial": i, "trial_seed": tseed, "class": cls, "where": where,
                                "signal": res["code"] if cls == "signal" else None,
                                "mutations": muts, "bad": bad[:5],
                                "stderr": res["stderr"][-1500:]})
                    n = sum(outcomes.values())
                    if progress_every and time.monotonic() - last_print[0] > progress_every:
                        last_print[0] = time.monotonic()
                        sys.stderr.write(f"  corrupt: {n} trials, {dict(outcomes)}\n")

        threads = [threading.Thread(target=worker, args=(zg,)) for zg in zygotes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        trials = sum(outcomes.values())
        rep.rows.append({"campaign": "corrupt" + (" (ASan/UBSan)" if sanitize or poison else ""),
                         "trials": trials, "ok": outcomes["ok"],
                         "exception": outcomes["exception"], "raw": outcomes["raw"],
                         "signal": outcomes["signal"], "hang": outcomes["hang"]})
        rep.figures["trials"] = trials
        rep.figures["outcomes"] = dict(outcomes)
        rep.figures["signal_and_hang_kinds"] = dict(kinds.most_common(30))
        rep.figures["documented_hangs"] = dict(causes)
        rep.figures["unexplained"] = len(rep.findings)
        rep.figures["exceptions_by_class"] = dict(ops_exc)
        rep.figures["raw_exceptions"] = dict(ops_raw.most_common(20))
        rep.figures["poisoned_free_pages"] = bool(poison)
        if causes:
            rep.notes.append("hangs whose mutations touched a lock's owner word or a "
                             "mutex's lock word (a live thread or process named as the "
                             "holder is waited for, as documented): "
                             + ", ".join(f"{k}: {v}" for k, v in causes.items()))
    finally:
        for zg in zygotes:
            zg.close()
        left = clean.run()
        if left["shm"] or left["sysv"]:
            rep.notes.append(f"cleaned up after the run: {left}")
    return rep

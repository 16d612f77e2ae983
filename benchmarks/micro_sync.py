"""Micro-benchmarks of shmkit.sync beside the anchors of ../shared/BENCHMARKS.md.

    python benchmarks/micro_sync.py [--quick]

Real spawned processes on both sides of every inter-process figure; each figure is the
median of 5 repetitions (3 with --quick) after a warm-up, with min and max; the anchors
run in the same repetitions, interleaved, so ratios compare like with like on a noisy
machine.  Anchors that are not installed are reported as missing.

Scenarios: Lock acquire+release (1 process; 2 processes contending) beside
multiprocessing.Lock, posix_ipc.Semaphore, fcntl.flock; ping-pong round trip (spinning
and sleeping) beside multiprocessing.Event and a posix_ipc semaphore pair; Counter
increments beside multiprocessing.Value with its lock.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import shmkit
import shmkit.sync

try:
    import posix_ipc
except ImportError:  # pragma: no cover - an optional anchor
    posix_ipc = None

QUICK = "--quick" in sys.argv
ONLY = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None  # lock|ping|count
REPS = 3 if QUICK else 5
N_LOCK = 300_000 if QUICK else 1_000_000
N_PING = 5_000 if QUICK else 20_000
N_PING_SLEEP = 1_000 if QUICK else 3_000


# ---- lock factories (each returns acquire, release; rebuilt in every process) ----------

def make_lock(kind, zone_name, path):
    if kind == "shmkit.Lock":
        lk = shmkit.Zone(zone_name).lock("bench-lock")
        return lk.acquire, lk.release, lk
    if kind == "posix_ipc.Semaphore":
        s = posix_ipc.Semaphore("/" + zone_name + "-sem")
        return s.acquire, s.release, s
    if kind == "fcntl.flock":
        f = open(path, "a+")
        fd = f.fileno()
        return (lambda: fcntl.flock(fd, fcntl.LOCK_EX)), (lambda: fcntl.flock(fd, fcntl.LOCK_UN)), f
    raise ValueError(kind)


def lock_loop(acquire, release, n):
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return time.perf_counter() - t0


def lock_child(kind, zone_name, path, mp_lock, n, go, out):
    if kind == "multiprocessing.Lock":
        acquire, release, keep = mp_lock.acquire, mp_lock.release, mp_lock
    else:
        acquire, release, keep = make_lock(kind, zone_name, path)
    lock_loop(acquire, release, 1000)
    go.wait()
    out.put(lock_loop(acquire, release, n))


def contended(kind, zone_name, path, mp_lock, n):
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=lock_child, args=(kind, zone_name, path, mp_lock, n, go, out))
          for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    go.set()
    times = [out.get(timeout=600) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join()
    del times
    return 2 * n / wall


# ---- ping-pong ----------------------------------------------------------------------------

def pp_objects(kind, zone_name, mp_pair):
    if kind.startswith("shmkit.Event"):
        z = shmkit.Zone(zone_name)
        a, b = z.event("ping"), z.event("pong")
        return ("event", a, b)
    if kind.startswith("shmkit.Semaphore"):
        z = shmkit.Zone(zone_name)
        return ("sem", z.semaphore("sping", 0), z.semaphore("spong", 0))
    if kind == "multiprocessing.Event":
        return ("event", mp_pair[0], mp_pair[1])
    if kind == "posix_ipc semaphores":
        return ("sem", posix_ipc.Semaphore("/" + zone_name + "-ping"),
                posix_ipc.Semaphore("/" + zone_name + "-pong"))
    raise ValueError(kind)


def pin(cpu):
    """Ping-pong partners run on different CPUs (the case that pays a cross-CPU wake-up
    when sleeping), the same for every kind, so placement luck does not decide."""
    try:
        if os.cpu_count() and os.cpu_count() > 1:
            os.sched_setaffinity(0, {cpu % os.cpu_count()})
    except OSError:
        pass


def ponger(kind, zone_name, mp_pair, n, sleeping):
    pin(1)
    if sleeping:
        shmkit.sync.configure(spin_max=0)
    style, a, b = pp_objects(kind, zone_name, mp_pair)
    if style == "event":
        for _ in range(n):
            a.wait()
            a.clear()
            b.set()
    else:
        for _ in range(n):
            a.acquire()
            b.release()


def pinger(kind, zone_name, mp_pair, n, sleeping, out):
    pin(0)
    if sleeping:
        shmkit.sync.configure(spin_max=0)
    style, a, b = pp_objects(kind, zone_name, mp_pair)
    clock = time.perf_counter_ns
    rtts = []
    if style == "event":
        for _ in range(n):
            t0 = clock()
            a.set()
            b.wait()
            b.clear()
            rtts.append(clock() - t0)
    else:
        for _ in range(n):
            t0 = clock()
            a.release()
            b.acquire()
            rtts.append(clock() - t0)
    rtts = rtts[n // 10:]  # warm-up
    rtts.sort()
    out.put((rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]))


def ping_pong(kind, zone_name, mp_pair, n, sleeping):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    q = ctx.Process(target=ponger, args=(kind, zone_name, mp_pair, n, sleeping))
    p = ctx.Process(target=pinger, args=(kind, zone_name, mp_pair, n, sleeping, out))
    q.start()
    p.start()
    res = out.get(timeout=600)
    p.join()
    q.join()
    return res


# ---- counters ------------------------------------------------------------------------------

def count_child(kind, zone_name, mp_value, n, go, out):
    if kind == "shmkit.Counter":
        inc = shmkit.Zone(zone_name).counter("bench-count").inc

        def loop():
            for _ in range(n):
                inc()
    elif kind == "shmkit.Value + lock":
        v = shmkit.Zone(zone_name).value("bench-value", "q")
        lock, obj = v.get_lock(), v.get_obj()

        def loop():
            for _ in range(n):
                with lock:
                    obj.value += 1
    else:
        lock = mp_value.get_lock()
        obj = mp_value.get_obj()

        def loop():
            for _ in range(n):
                with lock:
                    obj.value += 1
    go.wait()
    t0 = time.perf_counter()
    loop()
    out.put(time.perf_counter() - t0)


def counting(kind, zone_name, mp_value, n, procs):
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=count_child, args=(kind, zone_name, mp_value, n, go, out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    go.set()
    for _ in ps:
        out.get(timeout=600)
    wall = time.perf_counter() - t0
    for p in ps:
        p.join()
    return procs * n / wall


# ---- reporting ------------------------------------------------------------------------------

def summary(values):
    return statistics.median(values), min(values), max(values)


def table(title, unit, results, higher_is_better=True, ref="shmkit"):
    print(f"\n{title}")
    base = None
    for kind, vals in results.items():
        if kind.startswith(ref) and base is None and vals:
            base = summary(vals)[0]
    for kind, vals in results.items():
        if not vals:
            print(f"  {kind:<28} missing (not installed)")
            continue
        med, lo, hi = summary(vals)
        ratio = ""
        if base and not kind.startswith(ref):
            r = base / med if higher_is_better else med / base
            ratio = f"   shmkit is {r:.2f}x"
        print(f"  {kind:<28} {med:>10.3f} {unit}  (min {lo:.3f}, max {hi:.3f}){ratio}")


def main():
    zone_name = f"bench-sync-{os.getpid()}"
    zone = shmkit.Zone(zone_name, 4 << 20)
    path = tempfile.mktemp(prefix="shmkit-flock-")
    made = []
    if posix_ipc:
        for suffix in ("-sem",):
            made.append(posix_ipc.Semaphore("/" + zone_name + suffix, posix_ipc.O_CREX,
                                            initial_value=1))
        for suffix in ("-ping", "-pong"):
            made.append(posix_ipc.Semaphore("/" + zone_name + suffix, posix_ipc.O_CREX,
                                            initial_value=0))
    mp_lock = mp.get_context("spawn").Lock()
    try:
        print(f"shmkit.sync micro-benchmarks: {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}, {REPS} repetitions{' (quick)' if QUICK else ''}")
        print(f"tuning: {shmkit.sync.configure()}")
        kinds = ["shmkit.Lock", "multiprocessing.Lock", "posix_ipc.Semaphore", "fcntl.flock"]
        avail = {k: (k != "posix_ipc.Semaphore" or posix_ipc is not None) for k in kinds}

        # 1 process
        one = {k: [] for k in kinds}
        if ONLY not in (None, "lock"):
            one = {}
        for _ in range(REPS + 1 if one else 0):
            for k in kinds:
                if not avail[k]:
                    continue
                if k == "multiprocessing.Lock":
                    acq, rel = mp_lock.acquire, mp_lock.release
                else:
                    acq, rel, keep = make_lock(k, zone_name, path)
                one[k].append(N_LOCK / lock_loop(acq, rel, N_LOCK) / 1e6)
        one = {k: v[1:] for k, v in one.items()}  # first round is the warm-up
        if one:
            table("Lock acquire+release, 1 process (M/s; anchor seen here: 34.7 M/s mp.Lock)",
                  "M/s", one)

        two = {k: [] for k in kinds}
        for _ in range(REPS if ONLY in (None, "lock") else 0):
            for k in kinds:
                if avail[k]:
                    two[k].append(contended(k, zone_name, path, mp_lock, N_LOCK // 4) / 1e6)
        if ONLY in (None, "lock"):
            table("Lock acquire+release, 2 processes contending (M/s, both together)", "M/s",
                  two)

        # ping-pong
        mp_pair = (mp.get_context("spawn").Event(), mp.get_context("spawn").Event())
        pk = ["shmkit.Event", "shmkit.Semaphore pair", "multiprocessing.Event",
              "posix_ipc semaphores"]
        for sleeping, n in ((False, N_PING), (True, N_PING_SLEEP)) if ONLY in (None, "ping") else ():
            p50 = {k: [] for k in pk}
            p99 = {k: [] for k in pk}
            for _ in range(REPS):
                for k in pk:
                    if k.startswith("posix_ipc") and posix_ipc is None:
                        continue
                    if k == "multiprocessing.Event" and not sleeping:
                        m = n // 4  # ~100 µs each: keep the run short
                    else:
                        m = n
                    a, b = ping_pong(k, zone_name, mp_pair, m, sleeping)
                    p50[k].append(a / 1e3)
                    p99[k].append(b / 1e3)
                    zone.event("ping").clear()
                    zone.event("pong").clear()
            mode = "shmkit sleeping (spin_max=0)" if sleeping else "shmkit spinning-ready"
            table(f"Ping-pong round trip p50, {mode} (µs; best anchor seen here: 44 µs "
                  f"sleeping)", "µs", p50, higher_is_better=False)
            table(f"Ping-pong round trip p99, {mode} (µs)", "µs", p99, higher_is_better=False)

        # counters
        mp_value = mp.get_context("spawn").Value("q", 0)
        ck = ["shmkit.Counter", "shmkit.Value + lock", "multiprocessing.Value + lock"]
        for procs in (1, 2) if ONLY in (None, "count") else ():
            res = {k: [] for k in ck}
            for _ in range(REPS):
                for k in ck:
                    res[k].append(counting(k, zone_name, mp_value, N_LOCK // 4, procs) / 1e6)
            table(f"Increments, {procs} process(es) (M/s, all together)", "M/s", res)
    finally:
        for s in made:
            s.unlink()
        zone.close()
        zone.unlink()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()

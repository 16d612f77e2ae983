"""Micro benchmark of shmkit.Queue beside the anchors (see ../shared BENCHMARKS.md).

Real spawned processes on both sides; each figure is the median of --reps runs (min and
max printed too).  Anchors that are not installed are reported as missing.

    python benchmarks/micro_queue.py            # everything (~2-3 minutes)
    python benchmarks/micro_queue.py --quick    # fewer messages and repetitions
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import statistics
import sys
import time

import shmkit
from shmkit import Queue, Zone

CTX = mp.get_context("spawn")


# -- throughput: producer and consumer processes -------------------------------------------

def _barrier_wait(b):
    b.wait()
    return time.perf_counter()


def p_shm(q, size, n, batch, barrier):
    msg = bytes(size)
    _barrier_wait(barrier)
    if batch > 1:
        msgs = [msg] * batch
        for _ in range(n // batch):
            q.put_many(msgs)
    else:
        put = q.put
        for _ in range(n):
            put(msg)


def c_shm(q, n, batch, barrier, out, size=0):
    t0 = _barrier_wait(barrier)
    got = 0
    if batch > 1:
        gm = q.get_many
        while got < n:
            got += len(gm(4096))
    elif size >= 65536:
        # large messages: a reused receive buffer, no allocation per message
        get = q.get
        for _ in range(n):
            v = get(view=True)
            del v
    else:
        get = q.get
        for _ in range(n):
            get()
    out.put(time.perf_counter() - t0)


def p_mpq(q, size, n, batch, barrier):
    msg = bytes(size)
    _barrier_wait(barrier)
    for _ in range(n):
        q.put(msg)


def c_mpq(q, n, batch, barrier, out):
    t0 = _barrier_wait(barrier)
    for _ in range(n):
        q.get()
    out.put(time.perf_counter() - t0)


def p_pipe(conn, size, n, batch, barrier):
    msg = bytes(size)
    _barrier_wait(barrier)
    for _ in range(n):
        conn.send_bytes(msg)


def c_pipe(conn, n, batch, barrier, out):
    t0 = _barrier_wait(barrier)
    for _ in range(n):
        conn.recv_bytes()
    out.put(time.perf_counter() - t0)


def p_ff(q, size, n, batch, barrier):
    msg = bytes(size)
    _barrier_wait(barrier)
    for _ in range(n):
        q.put(msg, timeout=60)


def c_ff(q, n, batch, barrier, out):
    t0 = _barrier_wait(barrier)
    for _ in range(n):
        q.get(timeout=60)
    out.put(time.perf_counter() - t0)


def p_mq(name, size, n, batch, barrier):
    import posix_ipc
    mq = posix_ipc.MessageQueue(name)
    msg = bytes(size)
    _barrier_wait(barrier)
    for _ in range(n):
        mq.send(msg)


def c_mq(name, n, batch, barrier, out):
    import posix_ipc
    mq = posix_ipc.MessageQueue(name)
    t0 = _barrier_wait(barrier)
    for _ in range(n):
        mq.receive()
    out.put(time.perf_counter() - t0)


def run_pair(pfn, cfn, pobj, cobj, size, n, batch):
    barrier = CTX.Barrier(2)
    out = CTX.SimpleQueue()
    extra = (size,) if cfn is c_shm else ()
    c = CTX.Process(target=cfn, args=(cobj, n, batch, barrier, out, *extra))
    p = CTX.Process(target=pfn, args=(pobj, size, n, batch, barrier))
    c.start()
    p.start()
    secs = out.get()
    p.join()
    c.join()
    return n / secs


def measure(label, fn, reps):
    vals = []
    for _ in range(reps):
        vals.append(fn())
    med = statistics.median(vals)
    return label, med, min(vals), max(vals)


def throughput(zone, size, n, reps, batch=1, anchors=True):
    rows = []
    n -= n % batch
    cap = max(1 << 20, 4 * (size + 16))
    q = Queue(f"bench-{size}-{batch}", cap, zone=zone)
    rows.append(measure(f"shmkit.Queue{' put_many/get_many' if batch > 1 else ''}",
                        lambda: run_pair(p_shm, c_shm, q, q, size, n, batch), reps))
    if not anchors:
        return rows
    na = max(n // 20, 2000) if size <= 1024 else max(n // 4, 50)
    rows.append(measure("multiprocessing.Queue",
                        lambda: (lambda mq: run_pair(p_mpq, c_mpq, mq, mq, size, na, 1))(CTX.Queue()), reps))
    rows.append(measure("multiprocessing.SimpleQueue",
                        lambda: (lambda sq: run_pair(p_mpq, c_mpq, sq, sq, size, na, 1))(CTX.SimpleQueue()), reps))
    rows.append(measure("multiprocessing.Pipe",
                        lambda: (lambda ab: run_pair(p_pipe, c_pipe, ab[1], ab[0], size, na, 1))(CTX.Pipe(False)), reps))
    try:
        import faster_fifo
        rows.append(measure("faster_fifo.Queue", lambda: run_pair(
            p_ff, c_ff, *(lambda f: (f, f))(faster_fifo.Queue(max(10 << 20, 4 * size))), size, na, 1), reps))
    except ImportError:
        rows.append(("faster_fifo.Queue", None, None, None))
    if size <= 8192:
        try:
            import posix_ipc
            name = f"/shmkit-bench-{os.getpid()}"
            mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_message_size=max(size, 64))
            try:
                rows.append(measure("posix_ipc.MessageQueue",
                                    lambda: run_pair(p_mq, c_mq, name, name, size, na, 1), reps))
            finally:
                mq.unlink()
        except ImportError:
            rows.append(("posix_ipc.MessageQueue", None, None, None))
    return rows


# -- ping-pong ---------------------------------------------------------------------------

def echo_shm(a, b, n):
    for _ in range(n):
        b.put(a.get())


def ping_shm(a, b, n, out):
    msg = bytes(8)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        a.put(msg)
        b.get()
        lat.append(time.perf_counter() - t)
    out.put(lat)


def echo_pipe(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def ping_pipe(conn, n, out):
    msg = bytes(8)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        conn.send_bytes(msg)
        conn.recv_bytes()
        lat.append(time.perf_counter() - t)
    out.put(lat)


def echo_ff(a, b, n):
    for _ in range(n):
        b.put(a.get(timeout=60))


def ping_ff(a, b, n, out):
    msg = bytes(8)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        a.put(msg)
        b.get(timeout=60)
        lat.append(time.perf_counter() - t)
    out.put(lat)


def pingpong(echo, ping, eargs, pargs, n):
    out = CTX.SimpleQueue()
    e = CTX.Process(target=echo, args=(*eargs, n))
    p = CTX.Process(target=ping, args=(*pargs, n, out))
    e.start()
    p.start()
    lat = sorted(out.get()[n // 10:])  # drop the warm-up tenth
    e.join()
    p.join()
    return lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6


# -- 100 MB hand-off -----------------------------------------------------------------------

def handoff_producer(q, nbytes, reps, barrier):
    import numpy as np
    for _ in range(reps):
        barrier.wait()
        r = q.reserve(nbytes)
        a = np.ndarray(nbytes // 8, dtype=np.float64, buffer=r)
        a[:] = 1.0  # fill (not timed)
        del a
        t = time.perf_counter()
        r.commit()
        q.put(repr(t).encode())


def handoff_consumer(q, nbytes, reps, barrier, out):
    import numpy as np
    res = []
    for _ in range(reps):
        barrier.wait()
        block = q.get()
        arr = np.frombuffer(block, dtype=np.float64)
        t1 = time.perf_counter()
        t0 = float(q.get())
        assert arr[len(arr) // 2] == 1.0
        res.append(t1 - t0)
        del arr, block
    out.put(res)


def handoff(zone, nbytes, reps, spin=None):
    q = Queue(f"handoff-{nbytes}-{spin}", 1 << 16, zone=zone, spin=spin)
    barrier = CTX.Barrier(2)
    out = CTX.SimpleQueue()
    c = CTX.Process(target=handoff_consumer, args=(q, nbytes, reps, barrier, out))
    p = CTX.Process(target=handoff_producer, args=(q, nbytes, reps, barrier))
    c.start()
    p.start()
    res = out.get()
    p.join()
    c.join()
    return sorted(res)


def memcpy_rate(size, reps=50):
    src = bytearray(size)
    dst = bytearray(size)
    s = (ctypes.c_char * size).from_buffer(src)
    d = (ctypes.c_char * size).from_buffer(dst)
    ctypes.memmove(d, s, size)
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            ctypes.memmove(d, s, size)
        best.append((time.perf_counter() - t) / reps)
    return size / statistics.median(best)


def fmt_rate(v):
    return "missing" if v is None else f"{v / 1e6:9.3f} M/s"


def show(title, rows, unit=1, suffix="M msg/s"):
    print(f"\n{title}")
    best_anchor = max((r[1] for r in rows[1:] if r[1]), default=None)
    for label, med, lo, hi in rows:
        if med is None:
            print(f"  {label:34s}  missing (pip install it)")
            continue
        print(f"  {label:34s} {med / unit / 1e6:10.3f} {suffix}  (min {lo / unit / 1e6:.3f}, "
              f"max {hi / unit / 1e6:.3f})")
    if best_anchor:
        print(f"  shmkit / best anchor: {rows[0][1] / best_anchor:.1f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    scale = 0.2 if args.quick else 1.0
    only = set(args.only.split(",")) if args.only else None
    zname = f"shmkit-bench-{os.getpid()}"
    zone = Zone(zname, 256 << 20, max_size=1 << 30)
    try:
        print(f"shmkit {shmkit.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        if not only or "64" in only:
            show("64 B messages, 1 producer -> 1 consumer (single put/get)",
                 throughput(zone, 64, int(4_000_000 * scale), reps))
            show("64 B messages, batched (put_many 256 / get_many 4096)",
                 throughput(zone, 64, int(20_000_000 * scale), reps, batch=256, anchors=False))
        if not only or "1k" in only:
            show("1 KiB messages, single put/get", throughput(zone, 1024, int(2_000_000 * scale), reps))
        if not only or "64k" in only:
            show("64 KiB messages, single put/get", throughput(zone, 65536, int(100_000 * scale), reps))
        if not only or "1m" in only:
            rows = throughput(zone, 1 << 20, int(4000 * scale), reps)
            show("1 MiB messages, single put/get (GB/s)", [(l, m and m * (1 << 20), lo and lo * (1 << 20), hi and hi * (1 << 20)) for l, m, lo, hi in rows], unit=1e3, suffix="GB/s")
            mc = memcpy_rate(1 << 20)
            print(f"  in-process memcpy of 1 MiB: {mc / 1e9:.2f} GB/s; shmkit / memcpy = "
                  f"{rows[0][1] * (1 << 20) / mc:.2f}")
        if not only or "ping" in only:
            n = int(200_000 * scale)
            print("\nping-pong round trip, 8 B (p50 / p99, microseconds)")
            for label, spin in (("shmkit.Queue spinning", 200e-6), ("shmkit.Queue sleeping (spin=0)", 0)):
                a = Queue("ping-a", 1 << 16, zone=zone, spin=spin)
                b = Queue("ping-b", 1 << 16, zone=zone, spin=spin)
                p50, p99 = pingpong(echo_shm, ping_shm, (a, b), (a, b), n if spin else n // 10)
                print(f"  {label:34s} {p50:8.2f} / {p99:8.2f}")
            x, y = CTX.Pipe()
            p50, p99 = pingpong(echo_pipe, ping_pipe, (y,), (x,), n // 20)
            print(f"  {'multiprocessing.Pipe':34s} {p50:8.2f} / {p99:8.2f}")
            try:
                import faster_fifo
                fa, fb = faster_fifo.Queue(1 << 20), faster_fifo.Queue(1 << 20)
                p50, p99 = pingpong(echo_ff, ping_ff, (fa, fb), (fa, fb), n // 20)
                print(f"  {'faster_fifo.Queue pair':34s} {p50:8.2f} / {p99:8.2f}")
            except ImportError:
                print("  faster_fifo.Queue pair             missing")
        if not only or "handoff" in only:
            print("\nNumPy array hand-off with reserve()/commit() (commit -> consumer has the array)")
            for spin, how in ((None, "consumer asleep in get()"), (1.0, "consumer spinning in get()")):
                for nbytes in (1 << 20, 100_000_000):
                    res = handoff(zone, nbytes - nbytes % 8, reps, spin)
                    print(f"  {nbytes / 1e6:7.1f} MB, {how}: median {statistics.median(res) * 1e6:8.1f} us "
                          f"(min {res[0] * 1e6:.1f}, max {res[-1] * 1e6:.1f})")
            print("  anchors (BENCHMARKS.md): multiprocessing.Queue 252 ms; reused SharedMemory + copy 4.6 ms")
    finally:
        zone.close()
        zone.unlink()


if __name__ == "__main__":
    main()

"""Micro benchmark of shmkit.Board and shmkit.ndarray beside the anchors of issue 8.

    python benchmarks/micro_board.py [--quick] [--seconds S] [--reps N]

Real spawned processes on both sides of every IPC figure; median of N repetitions (min and
max shown).  Machines here are noisy: compare the ratios of one run, not absolute numbers
across runs.  Scenarios:

1. 1080p frames (1920x1080x3 uint8, 6.2 MB): a producer publishes as fast as it can, one
   consumer takes every newest frame.  Frames/s published and received for
     a) stdlib SharedMemory guarded by a multiprocessing.Lock (+ Condition to wait),
        the consumer copies each frame out under the lock;
     b) multiprocessing.Queue(maxsize=4) of frames;
     c) shmkit Board, consumer copies into a reused array (wait + read_into);
     d) shmkit Board, consumer takes zero-copy views (wait_newer(copy=False));
     e) as d), the producer builds frames in place (loan) instead of publish(frame).
   Every consumer sums a 1/4096 subsample of each frame it gets ("processing").
2. read() of an unchanged value in one process (ns per call) beside an empty Python
   method call and the bare C call that reads the version.
3. wake-up round trip between two processes through two boards (p50/p99), spinning and
   sleeping, beside multiprocessing.Pipe.
4. 100 MB NumPy array hand-off to another process: shmkit.ndarray sent by reference
   beside multiprocessing.Queue and a reused stdlib SharedMemory plus a copy.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid

import numpy as np

SHAPE = (1080, 1920, 3)
NBYTES = 1080 * 1920 * 3
CTX = mp.get_context("spawn")


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, SHAPE, dtype=np.uint8) for _ in range(4)]


def _touch(frame) -> int:
    return int(frame[::64, ::64, 0].sum())


# ---- 1a: SharedMemory + Lock ---------------------------------------------------------------

def _shm_producer(shm_name, cond, seconds, out):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(shm_name)
    seq = np.ndarray((1,), np.int64, buffer=shm.buf)
    dst = np.ndarray(SHAPE, np.uint8, buffer=shm.buf, offset=64)
    frames = _frames()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with cond:
            np.copyto(dst, frames[n % 4])
            seq[0] += 1
            cond.notify_all()
        n += 1
    elapsed = time.perf_counter() - t0
    with cond:
        seq[0] = -1
        cond.notify_all()
    out.put(("producer", n / elapsed))
    del seq, dst
    shm.close()


def _shm_consumer(shm_name, cond, out):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(shm_name)
    seq = np.ndarray((1,), np.int64, buffer=shm.buf)
    src = np.ndarray(SHAPE, np.uint8, buffer=shm.buf, offset=64)
    mine = np.empty(SHAPE, np.uint8)
    out.put(("ready",))
    last, n, t_first = 0, 0, None
    while True:
        with cond:
            cond.wait_for(lambda: seq[0] != last, timeout=5)
            last = int(seq[0])
            if last < 0:
                break
            np.copyto(mine, src)  # must copy under the lock, or the writer tears it
        _touch(mine)
        n += 1
        t_first = t_first or time.perf_counter()
        t_last = time.perf_counter()
    out.put(("consumer", (n - 1) / (t_last - t_first) if n > 1 else 0.0))
    del seq, src
    shm.close()


def run_shm_lock(seconds):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=NBYTES + 64)
    try:
        cond = CTX.Condition(CTX.Lock())
        return _pair(_shm_producer, (shm.name, cond, seconds), _shm_consumer, (shm.name, cond))
    finally:
        shm.close()
        shm.unlink()


# ---- 1b: multiprocessing.Queue ---------------------------------------------------------------

def _queue_producer(q, seconds, out):
    frames = _frames()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        q.put(frames[n % 4])
        n += 1
    elapsed = time.perf_counter() - t0
    q.put(None)
    out.put(("producer", n / elapsed))


def _queue_consumer(q, out):
    out.put(("ready",))
    n, t_first = 0, None
    while True:
        f = q.get()
        if f is None:
            break
        _touch(f)
        n += 1
        t_first = t_first or time.perf_counter()
        t_last = time.perf_counter()
    out.put(("consumer", (n - 1) / (t_last - t_first) if n > 1 else 0.0))


def run_queue(seconds):
    q = CTX.Queue(maxsize=4)
    return _pair(_queue_producer, (q, seconds), _queue_consumer, (q,))


# ---- 1c-e: shmkit Board --------------------------------------------------------------------

def _board_producer(zone, seconds, loan, out):
    from shmkit import Board
    b = Board("frames", NBYTES + 4096, zone=zone, writer=True)
    frames = _frames()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if loan:
            with b.loan(SHAPE, np.uint8) as f:
                np.copyto(f, frames[n % 4])  # stands for the camera filling the buffer
        else:
            b.publish(frames[n % 4])
        n += 1
    elapsed = time.perf_counter() - t0
    b.publish(b"stop")
    out.put(("producer", n / elapsed))
    b.close()


def _board_consumer(zone, zero_copy, out):
    from shmkit import Board
    b = Board("frames", NBYTES + 4096, zone=zone)
    mine = np.empty(SHAPE, np.uint8)
    out.put(("ready",))
    v, n, t_first = 0, 0, None
    while True:
        if zero_copy:
            frame, v = b.wait_newer(v, copy=False)
            if not isinstance(frame, np.ndarray):
                break
            _touch(frame)
        else:
            b.wait(v)
            try:
                v = b.read_into(mine, after=v)
            except ValueError:  # the stop marker is not a frame
                break
            _touch(mine)
        n += 1
        t_first = t_first or time.perf_counter()
        t_last = time.perf_counter()
    out.put(("consumer", (n - 1) / (t_last - t_first) if n > 1 else 0.0))
    b.close()


def run_board(seconds, zero_copy, loan):
    from shmkit import Zone
    name = f"shmkit-bench-board-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    z = Zone(name, 4 * (NBYTES + 8192) + (2 << 20))
    try:
        z.board("frames", NBYTES + 4096, buffers=3)
        return _pair(_board_producer, (z, seconds, loan), _board_consumer, (z, zero_copy))
    finally:
        z.close()
        z.unlink()


def _pair(producer, pargs, consumer, cargs):
    out = CTX.Queue()
    c = CTX.Process(target=consumer, args=(*cargs, out))
    c.start()
    try:
        assert out.get(timeout=60)[0] == "ready"
        p = CTX.Process(target=producer, args=(*pargs, out))
        p.start()
        res = dict(out.get(timeout=120) for _ in range(2))
        p.join(30)
        c.join(30)
        return res["producer"], res["consumer"]
    finally:
        for proc in (c,):
            if proc.is_alive():
                proc.kill()


# ---- 2: cached read ---------------------------------------------------------------------------

def run_cached_read(n=2_000_000):
    from shmkit import Zone
    name = f"shmkit-bench-read-{os.getpid()}"
    z = Zone(name, 1 << 20)
    try:
        b = z.board("b", 1024)
        b.publish({"config": 1})
        r = z.board("b", 1024)
        r.read()

        class Empty:
            def m(self):
                pass

        def loop(f):
            t = time.perf_counter()
            for _ in range(n):
                f()
            return (time.perf_counter() - t) / n * 1e9

        e = Empty().m
        version = r.version
        out = {
            "empty Python method call": loop(e),
            "C call: version()": loop(r._cb.version),
            "board.read() unchanged": loop(r.read),
            "board.read_if_newer(v) unchanged": loop(lambda: r.read_if_newer(version)),
        }
        del r, b
        return out
    finally:
        z.close()
        z.unlink()


# ---- 3: wake-up round trip ---------------------------------------------------------------------

def _ponger(zone, spin_us, n, out):
    from shmkit import Board
    ping = Board("ping", 64, zone=zone, spin_us=spin_us)
    pong = Board("pong", 64, zone=zone, writer=True)
    out.put("ready")
    v = 0
    for _ in range(n):
        v = ping.wait(v)
        pong.publish(b"p")


def run_pingpong(spin_us, n=3000):
    from shmkit import Zone
    name = f"shmkit-bench-pp-{os.getpid()}-{spin_us}"
    z = Zone(name, 1 << 20)
    out = CTX.Queue()
    try:
        ping = z.board("ping", 64, writer=True)
        pong = z.board("pong", 64, spin_us=spin_us)
        p = CTX.Process(target=_ponger, args=(z, spin_us, n, out))
        p.start()
        out.get(timeout=60)
        times = []
        v = 0
        for _ in range(n):
            t = time.perf_counter_ns()
            ping.publish(b"p")
            v = pong.wait(v)
            times.append(time.perf_counter_ns() - t)
        p.join(30)
        times = sorted(times[n // 10:])
        return times[len(times) // 2] / 1e3, times[int(len(times) * 0.99)] / 1e3
    finally:
        z.close()
        z.unlink()


def _pipe_ponger(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def run_pipe_pingpong(n=3000):
    a, b = CTX.Pipe()
    p = CTX.Process(target=_pipe_ponger, args=(b, n))
    p.start()
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        a.send_bytes(b"p")
        a.recv_bytes()
        times.append(time.perf_counter_ns() - t)
    p.join(30)
    times = sorted(times[n // 10:])
    return times[len(times) // 2] / 1e3, times[int(len(times) * 0.99)] / 1e3


# ---- 4: 100 MB ndarray hand-off ------------------------------------------------------------------

def _receiver(conn, kind, reps):
    from multiprocessing import shared_memory
    for _ in range(reps):
        obj = conn.recv()
        if kind == "shm":
            shm = shared_memory.SharedMemory(obj)
            a = np.ndarray((100 << 20,), np.uint8, buffer=shm.buf)
        else:
            a = obj
        _ = int(a[12345])
        t1 = time.monotonic_ns()
        del a
        if kind == "shm":
            shm.close()
        conn.send(t1)


def run_handoff(kind, reps):
    from multiprocessing import shared_memory

    from shmkit import Zone
    a, b = CTX.Pipe()
    p = CTX.Process(target=_receiver, args=(b, kind, reps))
    p.start()
    data = np.full(100 << 20, 7, np.uint8)
    z = shm = None
    try:
        if kind == "shmkit":
            name = f"shmkit-bench-nd-{os.getpid()}"
            z = Zone(name, (100 << 20) + (4 << 20))
            arr = z.ndarray("big", data.shape, data.dtype)
            arr[:] = data  # produced in place, as a zero-copy user would
        elif kind == "shm":
            shm = shared_memory.SharedMemory(create=True, size=data.nbytes)
            dst = np.ndarray(data.shape, data.dtype, buffer=shm.buf)
        out = []
        for _ in range(reps):
            t0 = time.monotonic_ns()
            if kind == "shmkit":
                a.send(arr)  # pickles as (zone, name): no data
            elif kind == "queue":
                a.send(data)
            else:
                np.copyto(dst, data)  # the reused segment needs a copy of each new array
                a.send(shm.name)
            out.append((a.recv() - t0) / 1e3)
        p.join(30)
        return out
    finally:
        if kind == "shmkit":
            del arr
            z.close()
            z.unlink()
        if shm is not None:
            del dst
            shm.close()
            shm.unlink()


# ---- main -----------------------------------------------------------------------------------

def _fmt(values, unit):
    med = statistics.median(values)
    return f"{med:10.1f} {unit}  (min {min(values):.1f}, max {max(values):.1f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s runs, 3 repetitions")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    seconds, reps = (1.0, 3) if args.quick else (args.seconds, args.reps)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
          f"median of {reps} runs of {seconds} s")

    print("\n1) 1080p frames, producer as fast as it can -> 1 consumer (frames/s)")
    variants = [
        ("SharedMemory + mp.Lock (anchor)", lambda: run_shm_lock(seconds)),
        ("mp.Queue of frames (anchor)", lambda: run_queue(seconds)),
        ("Board, read_into copy", lambda: run_board(seconds, False, False)),
        ("Board, zero-copy view", lambda: run_board(seconds, True, False)),
        ("Board, loan + zero-copy view", lambda: run_board(seconds, True, True)),
    ]
    received = {}
    for label, fn in variants:
        runs = [fn() for _ in range(reps)]
        pub = [r[0] for r in runs]
        got = [r[1] for r in runs]
        received[label] = statistics.median(got)
        print(f"  {label:34s} published {_fmt(pub, 'f/s')}")
        print(f"  {'':34s} received  {_fmt(got, 'f/s')}")
    best_anchor = max(received[k] for k in received if "anchor" in k)
    for k, v in received.items():
        if "anchor" not in k:
            print(f"  ratio received {k} / best anchor: {v / best_anchor:.2f}x")

    print("\n2) read() when nothing changed (ns per call, one process)")
    for label, ns in run_cached_read(1_000_000 if args.quick else 3_000_000).items():
        print(f"  {label:34s} {ns:8.1f} ns")

    print("\n3) wake-up round trip between two processes (us)")
    pp = run_pipe_pingpong()
    print(f"  {'mp.Pipe (anchor)':34s} p50 {pp[0]:8.1f}  p99 {pp[1]:8.1f}")
    for spin in (200, 0):
        r = run_pingpong(spin)
        print(f"  {f'Board wait, spin_us={spin}':34s} p50 {r[0]:8.1f}  p99 {r[1]:8.1f}")

    print("\n4) 100 MB NumPy array hand-off to another process (us, until it can read it)")
    for label, kind in (("mp.Pipe/Queue pickling (anchor)", "queue"),
                        ("reused SharedMemory + copy (anchor)", "shm"),
                        ("shmkit.ndarray by reference", "shmkit")):
        print(f"  {label:34s} {_fmt(run_handoff(kind, reps), 'us')}")


if __name__ == "__main__":
    main()

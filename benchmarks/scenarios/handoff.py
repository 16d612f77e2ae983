"""Hand-off of a 100 MB NumPy array from one process to another.

The producer holds a filled float64 array; the figure is the time from the producer
starting the hand-off to the consumer holding a NumPy array with the data (it reads the
first and last element to check).  After each hand-off the consumer acknowledges and
releases the array (not timed).

- multiprocessing.Queue pickles the array through a pipe;
- stdlib SharedMemory, fresh: the producer creates a segment, copies the array in, and
  sends its name; the consumer attaches and wraps it;
- stdlib SharedMemory, reused: one segment made beforehand; copy in, notify, wrap;
- shmkit.ndarray, reused: the same with a named shmkit array;
- shmkit.Queue reserve/commit (zero-copy): the producer built the array directly in a
  buffer reserved in the queue's zone (filling it is the producer's work, as it is in
  the other cases before the timer starts), commits, and the consumer gets a view of the
  same memory: nothing is copied.
"""

from __future__ import annotations

import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario
from ._common import attach_shared_memory, create_shared_memory

NBYTES = 100_000_000          # 100 MB
DTYPE = "float64"
TIMEOUT = 120.0
ZERO_COPY = "shmkit.Queue reserve/commit (zero-copy)"


def _shape():
    return (NBYTES // 8,)


def _array(np, fill):
    a = np.empty(_shape(), dtype=DTYPE)
    a.fill(fill)
    return a


def _check(a, fill):
    if a.shape != _shape() or a[0] != fill or a[-1] != fill:
        raise h.CaseFailed(f"received array {a.shape} with {a[0]!r}..{a[-1]!r}, expected {fill!r}")


def _latencies(t0s, t1s):
    return [b - a for a, b in zip(t0s, t1s)]


# -- roles: producer reports t0 per hand-off, consumer t1 ----------------------------------

# Every hand-off carries the next number of a sequence both sides count (across runs),
# so a consumer that saw stale data fails the case.  The producer's private array is
# allocated once and refilled (outside the timer) before each hand-off; it is not
# touched again before the consumer's acknowledgement, when the previous hand-off is over.

def queue_producer(ctl, q, ack):
    import numpy as np

    a, seq = _array(np, 0.0), 0
    for n in ctl.reps():
        t0s = []
        for _ in range(n):
            seq += 1
            a.fill(float(seq))
            t0s.append(time.perf_counter())
            q.put(a)
            ack.recv_bytes()
        ctl.report(t0s=t0s)


def queue_consumer(ctl, q, ack):
    seq = 0
    for n in ctl.reps():
        t1s = []
        for _ in range(n):
            seq += 1
            a = q.get(timeout=TIMEOUT)
            t1s.append(time.perf_counter())
            _check(a, float(seq))
            del a
            ack.send_bytes(b"k")
        ctl.report(t1s=t1s)


def fresh_shm_producer(ctl, conn):
    import numpy as np

    a, seq = _array(np, 0.0), 0
    for n in ctl.reps():
        t0s = []
        for _ in range(n):
            seq += 1
            a.fill(float(seq))
            t0s.append(time.perf_counter())
            shm = create_shared_memory(NBYTES)
            view = np.ndarray(_shape(), dtype=DTYPE, buffer=shm.buf)
            view[...] = a
            conn.send_bytes(shm.name.encode())
            del view
            conn.recv_bytes()            # the consumer has attached and let go
            shm.close()
            shm.unlink()
        ctl.report(t0s=t0s)


def fresh_shm_consumer(ctl, conn):
    import numpy as np

    seq = 0
    for n in ctl.reps():
        t1s = []
        for _ in range(n):
            seq += 1
            name = conn.recv_bytes().decode()
            shm = attach_shared_memory(name)
            a = np.ndarray(_shape(), dtype=DTYPE, buffer=shm.buf)
            t1s.append(time.perf_counter())
            _check(a, float(seq))
            del a
            shm.close()
            conn.send_bytes(b"k")
        ctl.report(t1s=t1s)


def reused_shm_producer(ctl, conn, name):
    import numpy as np

    shm = attach_shared_memory(name)
    view = np.ndarray(_shape(), dtype=DTYPE, buffer=shm.buf)
    _reused_producer(ctl, conn, view, np)
    del view
    shm.close()


def reused_shm_consumer(ctl, conn, name):
    import numpy as np

    shm = attach_shared_memory(name)
    view = np.ndarray(_shape(), dtype=DTYPE, buffer=shm.buf)
    _reused_consumer(ctl, conn, view)
    del view
    shm.close()


def shmkit_ndarray_producer(ctl, conn, arr):
    import numpy as np

    _reused_producer(ctl, conn, arr, np)


def shmkit_ndarray_consumer(ctl, conn, arr):
    _reused_consumer(ctl, conn, arr)


def _reused_producer(ctl, conn, view, np):
    a, seq = _array(np, 0.0), 0
    for n in ctl.reps():
        t0s = []
        for _ in range(n):
            seq += 1
            a.fill(float(seq))
            t0s.append(time.perf_counter())
            view[...] = a                 # copy into the shared array
            conn.send_bytes(b"n")         # "it is there"
            conn.recv_bytes()             # the consumer is done with it
        ctl.report(t0s=t0s)


def _reused_consumer(ctl, conn, view):
    import numpy as np

    seq = 0
    for n in ctl.reps():
        t1s = []
        for _ in range(n):
            seq += 1
            conn.recv_bytes()
            a = np.asarray(view)          # the consumer's array over the shared memory
            t1s.append(time.perf_counter())
            _check(a, float(seq))
            del a
            conn.send_bytes(b"k")
        ctl.report(t1s=t1s)


def zero_copy_producer(ctl, q, ack):
    import numpy as np

    seq = 0
    for n in ctl.reps():
        t0s = []
        for _ in range(n):
            seq += 1
            buf = q.reserve(NBYTES)
            a = np.frombuffer(buf, dtype=DTYPE)   # the data is produced in place
            a.fill(float(seq))
            del a
            t0s.append(time.perf_counter())
            buf.commit()
            del buf
            ack.recv_bytes()
        ctl.report(t0s=t0s)


def zero_copy_consumer(ctl, q, ack):
    import numpy as np

    seq = 0
    for n in ctl.reps():
        t1s = []
        for _ in range(n):
            seq += 1
            m = q.get(timeout=TIMEOUT)
            a = np.frombuffer(m, dtype=DTYPE)
            t1s.append(time.perf_counter())
            _check(a, float(seq))
            del a, m                      # the last view goes: the memory returns to the zone
            ack.send_bytes(b"k")
        ctl.report(t1s=t1s)


# -- cases --------------------------------------------------------------------------------

def compute(n, reports):
    lat = _latencies(reports[0]["t0s"], reports[1]["t1s"])
    lat.sort()
    return {"latency": lat[len(lat) // 2] * 1000.0}


def cases(opts):
    def numpy_needed():
        h.need_module("numpy")

    def mp_queue(env):
        numpy_needed()
        q = env.ctx.Queue()
        a, b = env.ctx.Pipe()
        return [Role(queue_producer, (q, a)), Role(queue_consumer, (q, b))]

    def fresh_shm(env):
        numpy_needed()
        a, b = env.ctx.Pipe()
        return [Role(fresh_shm_producer, (a,)), Role(fresh_shm_consumer, (b,))]

    def reused_shm(env):
        numpy_needed()
        shm = create_shared_memory(NBYTES)

        def drop():
            shm.close()
            shm.unlink()

        env.defer(drop)
        a, b = env.ctx.Pipe()
        return [Role(reused_shm_producer, (a, shm.name)), Role(reused_shm_consumer, (b, shm.name))]

    def shmkit_ndarray(env):
        numpy_needed()
        ndarray = h.need_shmkit("ndarray")
        zone = env.zone(NBYTES + (16 << 20))
        arr = h.shmkit_call("shmkit.ndarray(name, shape, dtype, zone=...)", ndarray,
                            env.unique("nd"), _shape(), DTYPE, zone=zone)
        a, b = env.ctx.Pipe()
        return [Role(shmkit_ndarray_producer, (a, arr)), Role(shmkit_ndarray_consumer, (b, arr))]

    def zero_copy(env):
        numpy_needed()
        Queue = h.need_shmkit("Queue", "reserve", "get")
        zone = env.zone(2 * NBYTES + (32 << 20))
        q = h.shmkit_call("shmkit.Queue(name, capacity, zone=...)", Queue, env.unique("q"), 1 << 20, zone=zone)
        a, b = env.ctx.Pipe()
        return [Role(zero_copy_producer, (q, a)), Role(zero_copy_consumer, (q, b))]

    # hand-offs per run: few for the copying ways (each moves 100 MB), many for zero-copy
    return [
        Case("multiprocessing.Queue (pickle)", ANCHOR, mp_queue, compute, fixed_n=1),
        Case("SharedMemory, fresh segment + copy", ANCHOR, fresh_shm, compute, fixed_n=1),
        Case("SharedMemory, reused segment + copy", ANCHOR, reused_shm, compute, fixed_n=3),
        Case("shmkit.ndarray, reused + copy", SHMKIT, shmkit_ndarray, compute, fixed_n=3),
        Case(ZERO_COPY, SHMKIT, zero_copy, compute, fixed_n=5),
    ]


def scenarios():
    return [Scenario(
        name="handoff_100MB",
        group="handoff",
        title="100 MB NumPy array hand-off between processes",
        description=("Time from the producer starting to hand over a filled 100 MB float64 "
                     "array to the consumer holding it as a NumPy array (median hand-off of the run)."),
        metrics=[Metric("latency", "ms", higher_is_better=False)],
        cases=cases,
        bar=h.bar_at_least(0.05, "zero-copy hand-off <= 50 µs, independent of size",
                           label=ZERO_COPY),
        needs=("numpy",),
    )]

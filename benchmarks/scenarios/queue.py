"""Queue throughput: 1 producer process -> 1 consumer process.

Each run the producer sends n messages of one size as fast as it can and the consumer
receives them all; the figure is n divided by the time from the producer's start to the
consumer's last receive (GB/s for the large sizes).  The 64 B batched variant sends lists
of 64 messages (put_many/get_many where the API has them).  The 1 MiB scenario also
shows an in-process memcpy of 1 MiB, the ceiling for any copy.
"""

from __future__ import annotations

import inspect
import time

from .. import harness as h
from ..harness import ANCHOR, REFERENCE, SHMKIT, Case, Metric, Role, Scenario
from ._common import size_label, size_tag

SIZES = (64, 1024, 64 << 10, 1 << 20)
BATCH = 64
GET_TIMEOUT = 120.0   # a stuck consumer fails the case (the parent times out first)


def capacity_for(size: int) -> int:
    """Ring capacity given to every bounded queue of a scenario (same for all)."""
    return max(1 << 20, 8 * size)


# -- roles ----------------------------------------------------------------------------------

def put_producer(ctl, q, size):
    payload = b"x" * size
    put = q.put
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            put(payload)
        ctl.report(t0=t0)


def get_consumer(ctl, q, size):
    get = q.get
    for n in ctl.reps():
        for _ in range(n):
            m = get()
        t1 = time.perf_counter()
        if len(m) != size:
            raise h.CaseFailed(f"received {len(m)} bytes, sent {size}")
        ctl.report(t1=t1)


def pipe_producer(ctl, conn, size):
    payload = b"x" * size
    send = conn.send_bytes
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            send(payload)
        ctl.report(t0=t0)


def pipe_consumer(ctl, conn, size):
    recv = conn.recv_bytes
    for n in ctl.reps():
        for _ in range(n):
            m = recv()
        t1 = time.perf_counter()
        if len(m) != size:
            raise h.CaseFailed(f"received {len(m)} bytes, sent {size}")
        ctl.report(t1=t1)


def fifo_producer(ctl, q, size):
    payload = b"x" * size
    put = q.put
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            put(payload, timeout=GET_TIMEOUT)
        ctl.report(t0=t0)


def fifo_consumer(ctl, q, size):
    get = q.get
    for n in ctl.reps():
        for _ in range(n):
            m = get(timeout=GET_TIMEOUT)
        t1 = time.perf_counter()
        if len(m) != size:
            raise h.CaseFailed(f"received {len(m)} bytes, sent {size}")
        ctl.report(t1=t1)


def mq_producer(ctl, name, size):
    import posix_ipc

    mq = posix_ipc.MessageQueue(name)
    payload = b"x" * size
    send = mq.send
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            send(payload)
        ctl.report(t0=t0)
    mq.close()


def mq_consumer(ctl, name, size):
    import posix_ipc

    mq = posix_ipc.MessageQueue(name)
    receive = mq.receive
    for n in ctl.reps():
        for _ in range(n):
            m, _prio = receive()
        t1 = time.perf_counter()
        if len(m) != size:
            raise h.CaseFailed(f"received {len(m)} bytes, sent {size}")
        ctl.report(t1=t1)
    mq.close()


def memcpy_worker(ctl, size):
    src = memoryview(bytearray(b"x" * size))
    dst = memoryview(bytearray(size))
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            dst[:] = src
        ctl.report(t0=t0, t1=time.perf_counter())


# batched roles: lists of BATCH messages
def make_batch(size):
    """BATCH distinct messages: a list of one object repeated would let pickle send it
    once and refer to it 63 times."""
    return [bytes([i % 256]) * size for i in range(BATCH)]


def batch_list_producer(ctl, q, size, method):
    batch = make_batch(size)
    put = getattr(q, method)
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n // BATCH):
            put(batch)
        ctl.report(t0=t0)


def batch_list_consumer(ctl, q, size, method):
    get = getattr(q, method)
    for n in ctl.reps():
        got = 0
        want = (n // BATCH) * BATCH
        while got < want:
            got += len(get())
        ctl.report(t1=time.perf_counter())


def fifo_many_producer(ctl, q, size):
    batch = make_batch(size)
    put_many = q.put_many
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n // BATCH):
            put_many(batch, timeout=GET_TIMEOUT)
        ctl.report(t0=t0)


def fifo_many_consumer(ctl, q, size):
    get_many = q.get_many
    for n in ctl.reps():
        got = 0
        want = (n // BATCH) * BATCH
        while got < want:
            got += len(get_many(timeout=GET_TIMEOUT, max_messages_to_get=16 * BATCH))
        ctl.report(t1=time.perf_counter())


def shmkit_many_producer(ctl, q, size):
    batch = make_batch(size)
    put_many = q.put_many
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n // BATCH):
            put_many(batch)
        ctl.report(t0=t0)


def shmkit_many_consumer(ctl, q, size):
    get_many = q.get_many
    for n in ctl.reps():
        got = 0
        want = (n // BATCH) * BATCH
        while got < want:
            got += len(get_many(max_messages=16 * BATCH, timeout=GET_TIMEOUT))
        ctl.report(t1=time.perf_counter())


# -- cases ----------------------------------------------------------------------------------

def _compute(size: int, per_byte: bool, batched: bool = False):
    def compute(n, reports):
        count = (n // BATCH) * BATCH if batched else n
        msgs = h.rate(count, reports)
        return {"throughput": msgs * size / 1e9 if per_byte else msgs}
    return compute


def _n_range(size: int):
    # first calibration run small enough for the slowest anchor (a few ms)
    if size >= 1 << 20:
        return 8, 20_000
    if size >= 64 << 10:
        return 64, 200_000
    return 1000, 50_000_000


def bytes_mode(Queue) -> dict:
    """``mode="bytes"`` when the Queue has modes: the messages here are raw bytes."""
    try:
        return {"mode": "bytes"} if "mode" in inspect.signature(Queue).parameters else {}
    except (TypeError, ValueError):
        return {}


def shmkit_queue(env, size: int, zone_size: int | None = None, **kw):
    """The shmkit queue of one case, in a fresh zone.  (Owner of Queue: adjust here.)"""
    Queue = h.need_shmkit("Queue", "put", "get")
    cap = capacity_for(size)
    zone = env.zone(zone_size or max(16 << 20, 4 * cap))
    return h.shmkit_call("shmkit.Queue(name, capacity, zone=...)", Queue, env.unique("q"), cap,
                         zone=zone, **bytes_mode(Queue), **kw)


def throughput_cases(size: int):
    per_byte = size >= 64 << 10
    n0, n_max = _n_range(size)
    compute = _compute(size, per_byte)
    cap = capacity_for(size)

    def mp_queue(env):
        q = env.ctx.Queue()
        return [Role(put_producer, (q, size)), Role(get_consumer, (q, size))]

    def mp_pipe(env):
        r, w = env.ctx.Pipe(duplex=False)
        env.defer(r.close)
        env.defer(w.close)
        return [Role(pipe_producer, (w, size)), Role(pipe_consumer, (r, size))]

    def mp_simple(env):
        q = env.ctx.SimpleQueue()
        return [Role(put_producer, (q, size)), Role(get_consumer, (q, size))]

    def faster_fifo(env):
        ff = h.need_module("faster_fifo", "faster-fifo")
        q = ff.Queue(max_size_bytes=cap)
        return [Role(fifo_producer, (q, size)), Role(fifo_consumer, (q, size))]

    def posix_mq(env):
        posix_ipc = h.need_module("posix_ipc")
        name = "/" + env.unique("mq")
        try:
            mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=10,
                                        max_message_size=size)
        except (ValueError, OSError, posix_ipc.Error) as exc:
            limit = _read_int("/proc/sys/fs/mqueue/msgsize_max")
            raise h.Unavailable(h.SKIPPED, f"cannot create a message queue for {size_label(size)} "
                                f"messages (fs.mqueue.msgsize_max={limit}): {exc}") from None
        mq.close()
        env.defer(lambda: posix_ipc.unlink_message_queue(name))
        return [Role(mq_producer, (name, size)), Role(mq_consumer, (name, size))]

    def shmkit(env):
        q = shmkit_queue(env, size)
        return [Role(put_producer, (q, size)), Role(get_consumer, (q, size))]

    cases = [
        Case("multiprocessing.Queue", ANCHOR, mp_queue, compute, n0, n_max),
        Case("multiprocessing.Pipe", ANCHOR, mp_pipe, compute, n0, n_max,
             note="send_bytes/recv_bytes"),
        Case("multiprocessing.SimpleQueue", ANCHOR, mp_simple, compute, n0, n_max),
        Case("faster-fifo", ANCHOR, faster_fifo, compute, n0, n_max),
        Case("posix_ipc.MessageQueue", ANCHOR, posix_mq, compute, n0, n_max,
             note="10 messages deep (the system default)"),
    ]
    if size == 1 << 20:
        def memcpy(env):
            return [Role(memcpy_worker, (size,))]
        cases.append(Case("memcpy 1 MiB (in-process)", REFERENCE, memcpy, compute, 64, 1_000_000))
    cases.append(Case("shmkit.Queue", SHMKIT, shmkit, compute, n0, n_max))
    return cases


def batched_cases():
    size = 64
    n0, n_max = 64 * 100, 100_000_000
    compute = _compute(size, False, batched=True)
    cap = capacity_for(size)

    def mp_queue(env):
        q = env.ctx.Queue()
        return [Role(batch_list_producer, (q, size, "put")), Role(batch_list_consumer, (q, size, "get"))]

    def mp_pipe(env):
        r, w = env.ctx.Pipe(duplex=False)
        env.defer(r.close)
        env.defer(w.close)
        return [Role(batch_list_producer, (w, size, "send")), Role(batch_list_consumer, (r, size, "recv"))]

    def faster_fifo(env):
        ff = h.need_module("faster_fifo", "faster-fifo")
        q = ff.Queue(max_size_bytes=cap)
        return [Role(fifo_many_producer, (q, size)), Role(fifo_many_consumer, (q, size))]

    def shmkit(env):
        h.need_shmkit("Queue", "put_many", "get_many")
        q = shmkit_queue(env, size)
        return [Role(shmkit_many_producer, (q, size)), Role(shmkit_many_consumer, (q, size))]

    return [
        Case(f"multiprocessing.Queue (lists of {BATCH})", ANCHOR, mp_queue, compute, n0, n_max),
        Case(f"multiprocessing.Pipe (lists of {BATCH})", ANCHOR, mp_pipe, compute, n0, n_max),
        Case("faster-fifo put_many/get_many", ANCHOR, faster_fifo, compute, n0, n_max,
             note=f"batches of {BATCH}"),
        Case("shmkit.Queue put_many/get_many", SHMKIT, shmkit, compute, n0, n_max,
             note=f"batches of {BATCH}"),
    ]


# -- task accounting: put / get + task_done (issue 18) ----------------------------------------

def task_consumer(ctl, q, size):
    """get() then task_done() per message: the stdlib JoinableQueue worker's loop."""
    get, done = q.get, q.task_done
    for n in ctl.reps():
        for _ in range(n):
            m = get()
            done()
        t1 = time.perf_counter()
        if len(m) != size:
            raise h.CaseFailed(f"received {len(m)} bytes, sent {size}")
        ctl.report(t1=t1)


AT_MOST_ONCE = "shmkit.Queue at-most-once"
AT_LEAST_ONCE = "shmkit.Queue at-least-once"


def task_cases():
    size = 64
    n0, n_max = 1000, 50_000_000
    compute = _compute(size, False)

    def mp_joinable(env):
        q = env.ctx.JoinableQueue()
        return [Role(put_producer, (q, size)), Role(task_consumer, (q, size))]

    def shmkit_mode(delivery):
        def make(env):
            h.need_shmkit("Queue", "task_done", "join")
            q = shmkit_queue(env, size, delivery=delivery)
            return [Role(put_producer, (q, size)), Role(task_consumer, (q, size))]
        return make

    return [
        Case("multiprocessing.JoinableQueue", ANCHOR, mp_joinable, compute, n0, n_max,
             note="put; get + task_done"),
        Case(AT_MOST_ONCE, SHMKIT, shmkit_mode("at-most-once"), compute, n0, n_max,
             note="the default: get + task_done"),
        Case(AT_LEAST_ONCE, SHMKIT, shmkit_mode("at-least-once"), compute, n0, n_max,
             note="acknowledged delivery: get + task_done"),
    ]


def _within_2x_of_default(res, _all):
    m = res.scenario.primary
    ack, amo = res.row(AT_LEAST_ONCE), res.row(AT_MOST_ONCE)
    if any(r is None or r.status != h.OK or m.name not in r.figures for r in (ack, amo)):
        return None
    return ack.figures[m.name].median >= 0.5 * amo.figures[m.name].median


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# -- scenarios ------------------------------------------------------------------------------

def _bar(size):
    if size == 64:
        return h.bar_at_least(15e6, ">= 15M msg/s (>= 17x the best anchor)")
    if size == 1024:
        return h.bar_at_least(8e6, ">= 8M msg/s")
    if size == 1 << 20:
        return h.bar_ratio(0.8, ">= 0.8x an in-process memcpy of 1 MiB", label="memcpy 1 MiB (in-process)")
    return None


def scenarios():
    out = []
    for size in SIZES:
        per_byte = size >= 64 << 10
        metric = Metric("throughput", "GB/s" if per_byte else "msg/s")
        out.append(Scenario(
            name=f"queue_{size_tag(size)}",
            group="queue",
            title=f"queue throughput, 1 producer -> 1 consumer, {size_label(size)} messages",
            description=(f"A producer process sends {size_label(size)} messages as fast as it can, "
                         f"a consumer process receives them; "
                         + ("bytes per second delivered." if per_byte else "messages per second delivered.")),
            metrics=[metric],
            cases=lambda opts, size=size: throughput_cases(size),
            bar=_bar(size),
        ))
        if size == 64:
            out.append(Scenario(
                name="queue_64B_batched",
                group="queue",
                title=f"queue throughput, 1 -> 1, 64 B messages in batches of {BATCH}",
                description=(f"As queue_64B, but the producer hands over lists of {BATCH} messages "
                             "(put_many/get_many where the API has them); messages per second."),
                metrics=[Metric("throughput", "msg/s")],
                cases=lambda opts: batched_cases(),
                bar=h.bar_at_least(50e6, ">= 50M msg/s"),
            ))
            out.append(Scenario(
                name="queue_64B_tasks",
                group="queue",
                title="queue with task accounting, 1 -> 1, 64 B: put / get + task_done",
                description=("A producer process puts 64 B messages, a consumer process gets "
                             "each and marks it done (task_done), as a JoinableQueue worker "
                             "does; shmkit in both delivery modes; messages per second."),
                metrics=[Metric("throughput", "msg/s")],
                cases=lambda opts: task_cases(),
                bar=h.Bar("at-least-once >= 0.5x at-most-once (within 2x of the default mode)",
                          _within_2x_of_default),
            ))
    return out

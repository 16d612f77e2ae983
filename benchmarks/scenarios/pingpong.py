"""Ping-pong round trip of an 8 B message between two processes, p50 and p99.

The initiator sends 8 bytes, the responder sends them back; every round trip is timed
(one perf_counter_ns per trip) and each run reports the median and 99th percentile.
Two scenarios: *sleeping*, where the waiting side blocks in the kernel (what Pipe,
Queue, semaphores do; a wake-up costs ~20 µs each way on a VM), and *spinning*, where
both sides are busy-polling shared memory and ready at once.
"""

from __future__ import annotations

import importlib
import inspect
import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario
from ._common import attach_shared_memory, create_shared_memory, round_trip_percentiles
from .queue import bytes_mode

MSG = b"pingpong"   # 8 bytes
TIMEOUT = 120.0


# -- roles: the initiator times every round trip, the responder echoes -------------------

def pipe_initiator(ctl, conn):
    send, recv, now = conn.send_bytes, conn.recv_bytes, time.perf_counter_ns
    for n in ctl.reps():
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            send(MSG)
            recv()
            ts[i] = now()
        ctl.report(**round_trip_percentiles(ts))


def pipe_responder(ctl, conn):
    send, recv = conn.send_bytes, conn.recv_bytes
    for n in ctl.reps():
        for _ in range(n):
            send(recv())


def queue_initiator(ctl, q_out, q_in, kw, prep=None):
    prepare(prep)
    put, get, now = q_out.put, q_in.get, time.perf_counter_ns
    for n in ctl.reps():
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            put(MSG, **kw)
            get(**kw)
            ts[i] = now()
        ctl.report(**round_trip_percentiles(ts))


def queue_responder(ctl, q_in, q_out, kw, prep=None):
    prepare(prep)
    put, get = q_out.put, q_in.get
    for n in ctl.reps():
        for _ in range(n):
            put(get(**kw), **kw)


def sem_initiator(ctl, name_ping, name_pong):
    import posix_ipc

    ping, pong = posix_ipc.Semaphore(name_ping), posix_ipc.Semaphore(name_pong)
    release, acquire, now = ping.release, pong.acquire, time.perf_counter_ns
    for n in ctl.reps():
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            release()
            acquire()
            ts[i] = now()
        ctl.report(**round_trip_percentiles(ts))


def sem_responder(ctl, name_ping, name_pong):
    import posix_ipc

    ping, pong = posix_ipc.Semaphore(name_ping), posix_ipc.Semaphore(name_pong)
    acquire, release = ping.acquire, pong.release
    for n in ctl.reps():
        for _ in range(n):
            acquire()
            release()


def event_initiator(ctl, ping, pong, prep=None):
    prepare(prep)
    # the responder clears ping before it sets pong, so ping is clear again by the time
    # the next round starts
    set_ping, wait_pong, clear_pong, now = ping.set, pong.wait, pong.clear, time.perf_counter_ns
    for n in ctl.reps():
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            set_ping()
            wait_pong()
            clear_pong()
            ts[i] = now()
        ctl.report(**round_trip_percentiles(ts))


def event_responder(ctl, ping, pong, prep=None):
    prepare(prep)
    wait_ping, clear_ping, set_pong = ping.wait, ping.clear, pong.set
    for n in ctl.reps():
        for _ in range(n):
            wait_ping()
            clear_ping()
            set_pong()


# busy-spin on shared memory, pure Python.  Layout of the 64 bytes: [0] ping sequence
# number, [8:16] ping payload, [16] pong sequence number, [24:32] pong payload.  Both
# sides walk the same sequence 1..255, 1.. so no reset is needed between runs.

def spin_initiator(ctl, shm_name):
    shm = attach_shared_memory(shm_name)
    buf = shm.buf
    now = time.perf_counter_ns
    seq = 0
    for n in ctl.reps():
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            seq = seq % 255 + 1
            buf[8:16] = MSG
            buf[0] = seq
            while buf[16] != seq:
                pass
            buf[24:32].tobytes()
            ts[i] = now()
        ctl.report(**round_trip_percentiles(ts))
    del buf
    shm.close()


def spin_responder(ctl, shm_name):
    shm = attach_shared_memory(shm_name)
    buf = shm.buf
    seq = 0
    for n in ctl.reps():
        for _ in range(n):
            seq = seq % 255 + 1
            while buf[0] != seq:
                pass
            buf[24:32] = buf[8:16]
            buf[16] = seq
    del buf
    shm.close()


# -- cases --------------------------------------------------------------------------------

def compute(n, reports):
    return {"p50": reports[0]["p50"], "p99": reports[0]["p99"]}


N0, N_MAX = 200, 2_000_000


def sleep_settings(what: str, cls):
    """How to make a shmkit primitive's blocking calls sleep at once instead of spinning
    first: ``(constructor keyword arguments, call to make in each worker process)``.
    Spinning mode uses the defaults (the adaptive spin).  Owners of Queue and Event:
    this is the one place to adjust.

    - a per-object keyword (``spin=0``, ``spin_us=0``, ``spin_ns=0``, ``spin_max=0``), or
    - a per-process ``configure(spin_max=0)`` in the primitive's module (shmkit.sync has
      one; the call is made in each spawned worker).
    """
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for kw in ("spin", "spin_us", "spin_ns", "spin_max"):
        if kw in params:
            return {kw: 0}, None
    module = importlib.import_module(cls.__module__)
    configure = getattr(module, "configure", None)
    if configure is not None and "spin_max" in inspect.signature(configure).parameters:
        return {}, (module.__name__, "configure", {"spin_max": 0})
    raise h.Unavailable(h.NOT_YET, f"no way to turn {what}'s spinning off yet (expected a spin= "
                        f"keyword or {module.__name__}.configure(spin_max=0))")


def prepare(call):
    """Run ``(module, function, kwargs)`` in this worker process (None: nothing)."""
    if call is not None:
        module, func, kwargs = call
        getattr(importlib.import_module(module), func)(**kwargs)


def sleeping_cases():
    def mp_pipe(env):
        a, b = env.ctx.Pipe()
        env.defer(a.close)
        env.defer(b.close)
        return [Role(pipe_initiator, (a,)), Role(pipe_responder, (b,))]

    def mp_queue(env):
        q1, q2 = env.ctx.Queue(), env.ctx.Queue()
        return [Role(queue_initiator, (q1, q2, {})), Role(queue_responder, (q1, q2, {}))]

    def faster_fifo(env):
        ff = h.need_module("faster_fifo", "faster-fifo")
        q1, q2 = ff.Queue(1 << 16), ff.Queue(1 << 16)
        kw = {"timeout": TIMEOUT}
        return [Role(queue_initiator, (q1, q2, kw)), Role(queue_responder, (q1, q2, kw))]

    def posix_sem(env):
        posix_ipc = h.need_module("posix_ipc")
        names = ["/" + env.unique("ping"), "/" + env.unique("pong")]
        for name in names:
            posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0).close()
            env.defer(lambda name=name: posix_ipc.unlink_semaphore(name))
        return [Role(sem_initiator, tuple(names)), Role(sem_responder, tuple(names))]

    def mp_event(env):
        e1, e2 = env.ctx.Event(), env.ctx.Event()
        return [Role(event_initiator, (e1, e2)), Role(event_responder, (e1, e2))]

    return [
        Case("multiprocessing.Pipe", ANCHOR, mp_pipe, compute, N0, N_MAX, note="duplex, send_bytes/recv_bytes"),
        Case("multiprocessing.Queue pair", ANCHOR, mp_queue, compute, N0, N_MAX),
        Case("faster-fifo pair", ANCHOR, faster_fifo, compute, N0, N_MAX),
        Case("posix_ipc.Semaphore pair", ANCHOR, posix_sem, compute, N0, N_MAX, note="no payload"),
        Case("multiprocessing.Event pair", ANCHOR, mp_event, compute, N0, N_MAX, note="no payload"),
        Case("shmkit.Queue pair (sleeping)", SHMKIT, _shmkit_queue_pair("sleep"), compute, N0, N_MAX),
        Case("shmkit.Event pair (sleeping)", SHMKIT, _shmkit_event_pair("sleep"), compute, N0, N_MAX,
             note="no payload"),
    ]


def spinning_cases():
    def busy_spin(env):
        shm = create_shared_memory(64)
        name = shm.name

        def drop():
            shm.close()
            shm.unlink()

        env.defer(drop)
        return [Role(spin_initiator, (name,)), Role(spin_responder, (name,))]

    return [
        Case("busy-spin on SharedMemory (pure Python)", ANCHOR, busy_spin, compute, N0, N_MAX),
        Case("shmkit.Queue pair (spinning)", SHMKIT, _shmkit_queue_pair("spin"), compute, N0, N_MAX),
        Case("shmkit.Event pair (spinning)", SHMKIT, _shmkit_event_pair("spin"), compute, N0, N_MAX,
             note="no payload"),
    ]


def _shmkit_queue_pair(mode):
    def setup(env):
        Queue = h.need_shmkit("Queue", "put", "get")
        kw, prep = sleep_settings("shmkit.Queue", Queue) if mode == "sleep" else ({}, None)
        kw.update(bytes_mode(Queue))
        zone = env.zone(8 << 20)
        q1 = h.shmkit_call("shmkit.Queue", Queue, env.unique("ping"), 1 << 16, zone=zone, **kw)
        q2 = h.shmkit_call("shmkit.Queue", Queue, env.unique("pong"), 1 << 16, zone=zone, **kw)
        return [Role(queue_initiator, (q1, q2, {}, prep)), Role(queue_responder, (q1, q2, {}, prep))]
    return setup


def _shmkit_event_pair(mode):
    def setup(env):
        Event = h.need_shmkit("Event", "set", "wait", "clear")
        kw, prep = sleep_settings("shmkit.Event", Event) if mode == "sleep" else ({}, None)
        zone = env.zone(4 << 20)
        e1 = h.shmkit_call("shmkit.Event", Event, env.unique("ping"), zone=zone, **kw)
        e2 = h.shmkit_call("shmkit.Event", Event, env.unique("pong"), zone=zone, **kw)
        return [Role(event_initiator, (e1, e2, prep)), Role(event_responder, (e1, e2, prep))]
    return setup


METRICS = [Metric("p50", "µs", higher_is_better=False), Metric("p99", "µs", higher_is_better=False)]


def scenarios():
    return [
        Scenario(
            name="pingpong_sleep",
            group="pingpong",
            title="ping-pong round trip, 8 B, sleeping waits",
            description=("Two processes bounce an 8 B message; the waiting side sleeps in the "
                         "kernel. Round-trip time per message, median and 99th percentile."),
            metrics=METRICS,
            cases=lambda opts: sleeping_cases(),
            bar=h.bar_ratio(1.0, "p50 no worse than the best anchor"),
        ),
        Scenario(
            name="pingpong_spin",
            group="pingpong",
            title="ping-pong round trip, 8 B, both sides spinning",
            description=("Two processes bounce an 8 B message while both are spinning-ready "
                         "(busy-polling shared memory). Round-trip time, median and 99th percentile."),
            metrics=METRICS,
            cases=lambda opts: spinning_cases(),
            bar=h.bar_at_least(1.0, "p50 <= 1 µs"),
        ),
    ]

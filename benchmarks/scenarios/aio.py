"""asyncio (issue 16): ping-pong between two processes whose both sides await, and many
coroutines waiting on many objects.

*aio ping-pong*: the initiator sets ``ping`` and awaits ``pong``; the responder awaits
``ping`` and sets ``pong`` (Events: no payload; and Queues with 8 B messages, as the
anchors), every round trip timed as in the pingpong scenarios.  Anchors: asyncio + ``run_in_executor(multiprocessing.Queue.get)``
(the usual way to await another process today) and aioprocessing (the same thing,
packaged).  The yardstick is the *blocking* shmkit Event pair with spinning off (the sync
sleeping ping-pong): the bar is an awaited round trip no slower than it.  shmkit's awaited
rows: the default (the attempt in the event loop spins briefly, adaptively, before the
hub), spinning off (every hand-off goes through the hub: two thread wake-ups per
direction plus the event loop), and on uvloop.

*aio many waiters*: 10,000 coroutines in one process await 1,000 different Events, which
another process sets once they all wait.  Figures: the waiting process's CPU time per
second of waiting (from /proc/self/stat: all its threads; measured over 1 s, 0.3 s with
--quick), the hub threads it added, and the time from the first set() to the last
coroutine awake.  (No anchor: the executor-based
ways need a thread per waiting coroutine.)
"""

from __future__ import annotations

import asyncio
import os
import time

from .. import harness as h
from ..harness import ANCHOR, REFERENCE, SHMKIT, Case, Metric, Role, Scenario
from ._common import round_trip_percentiles
from .pingpong import MSG, event_initiator, event_responder, sleep_settings

N0, N_MAX = 100, 200_000


def _run(coro, loop_kind: str):
    if loop_kind == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


# -- roles: shmkit Events, awaited ---------------------------------------------------------

def aio_initiator(ctl, ping, pong, loop_kind, spin):
    import shmkit
    shmkit.aio_configure(spin=spin)

    async def rounds(n):
        now, set_ping, wait_pong, clear_pong = time.perf_counter_ns, ping.set, pong.aio.wait, pong.clear
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            set_ping()
            await wait_pong()
            clear_pong()
            ts[i] = now()
        return ts

    for n in ctl.reps():
        ctl.report(**round_trip_percentiles(_run(rounds(n), loop_kind)))


def aio_responder(ctl, ping, pong, loop_kind, spin):
    import shmkit
    shmkit.aio_configure(spin=spin)

    async def rounds(n):
        wait_ping, clear_ping, set_pong = ping.aio.wait, ping.clear, pong.set
        for _ in range(n):
            await wait_ping()
            clear_ping()
            set_pong()

    for n in ctl.reps():
        _run(rounds(n), loop_kind)


def aio_queue_initiator(ctl, q_out, q_in, loop_kind, spin):
    import shmkit
    shmkit.aio_configure(spin=spin)

    async def rounds(n):
        now, put, get = time.perf_counter_ns, q_out.put, q_in.aio.get
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            put(MSG)
            await get()
            ts[i] = now()
        return ts

    for n in ctl.reps():
        ctl.report(**round_trip_percentiles(_run(rounds(n), loop_kind)))


def aio_queue_responder(ctl, q_in, q_out, loop_kind, spin):
    import shmkit
    shmkit.aio_configure(spin=spin)

    async def rounds(n):
        get, put = q_in.aio.get, q_out.put
        for _ in range(n):
            put(await get())

    for n in ctl.reps():
        _run(rounds(n), loop_kind)


# -- roles: anchors ----------------------------------------------------------------------------

def executor_initiator(ctl, q_out, q_in):
    async def rounds(n):
        loop = asyncio.get_running_loop()
        now, get = time.perf_counter_ns, q_in.get
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            q_out.put(MSG)
            await loop.run_in_executor(None, get)
            ts[i] = now()
        return ts

    for n in ctl.reps():
        ctl.report(**round_trip_percentiles(asyncio.run(rounds(n))))


def executor_responder(ctl, q_in, q_out):
    async def rounds(n):
        loop = asyncio.get_running_loop()
        get = q_in.get
        for _ in range(n):
            q_out.put(await loop.run_in_executor(None, get))

    for n in ctl.reps():
        asyncio.run(rounds(n))


def aioprocessing_initiator(ctl, q_out, q_in):
    async def rounds(n):
        now = time.perf_counter_ns
        ts = [0] * (n + 1)
        ts[0] = now()
        for i in range(1, n + 1):
            q_out.put(MSG)
            await q_in.coro_get()
            ts[i] = now()
        return ts

    for n in ctl.reps():
        ctl.report(**round_trip_percentiles(asyncio.run(rounds(n))))


def aioprocessing_responder(ctl, q_in, q_out):
    async def rounds(n):
        for _ in range(n):
            q_out.put(await q_in.coro_get())

    for n in ctl.reps():
        asyncio.run(rounds(n))


def pingpong_cases():
    def compute(n, reports):
        return {"p50": reports[0]["p50"], "p99": reports[0]["p99"]}

    def executor(env):
        q1, q2 = env.ctx.Queue(), env.ctx.Queue()
        return [Role(executor_initiator, (q1, q2)), Role(executor_responder, (q1, q2))]

    def aioproc(env):
        aioprocessing = h.need_module("aioprocessing")
        q1 = aioprocessing.AioQueue(context=env.ctx)
        q2 = aioprocessing.AioQueue(context=env.ctx)
        return [Role(aioprocessing_initiator, (q1, q2)), Role(aioprocessing_responder, (q1, q2))]

    def blocking_sleeping(env):
        Event = h.need_shmkit("Event", "set", "wait", "clear")
        kw, prep = sleep_settings("shmkit.Event", Event)
        zone = env.zone(4 << 20)
        e1 = h.shmkit_call("shmkit.Event", Event, env.unique("ping"), zone=zone, **kw)
        e2 = h.shmkit_call("shmkit.Event", Event, env.unique("pong"), zone=zone, **kw)
        return [Role(event_initiator, (e1, e2, prep)), Role(event_responder, (e1, e2, prep))]

    def awaited(loop_kind, spin):
        def setup(env):
            Event = h.need_shmkit("Event", "set", "clear", "aio")
            h.need_shmkit("aio_configure")
            if loop_kind == "uvloop":
                h.need_module("uvloop")
            zone = env.zone(4 << 20)
            e1 = Event(env.unique("ping"), zone=zone)
            e2 = Event(env.unique("pong"), zone=zone)
            return [Role(aio_initiator, (e1, e2, loop_kind, spin)),
                    Role(aio_responder, (e1, e2, loop_kind, spin))]
        return setup

    def awaited_queue(loop_kind, spin):
        def setup(env):
            Queue = h.need_shmkit("Queue", "put", "aio")
            h.need_shmkit("aio_configure")
            if loop_kind == "uvloop":
                h.need_module("uvloop")
            zone = env.zone(8 << 20)
            q1 = Queue(env.unique("ping"), 1 << 16, zone=zone)
            q2 = Queue(env.unique("pong"), 1 << 16, zone=zone)
            return [Role(aio_queue_initiator, (q1, q2, loop_kind, spin)),
                    Role(aio_queue_responder, (q1, q2, loop_kind, spin))]
        return setup

    return [
        Case("asyncio + run_in_executor(multiprocessing.Queue.get) pair", ANCHOR, executor,
             compute, N0, N_MAX),
        Case("aioprocessing.AioQueue pair", ANCHOR, aioproc, compute, N0, N_MAX,
             note="coro_get (a thread pool underneath)"),
        Case("shmkit.Event pair, blocking (sleeping)", REFERENCE, blocking_sleeping, compute,
             N0, N_MAX, note="the sync sleeping ping-pong: the bar"),
        Case("shmkit.Event pair, awaited (asyncio)", SHMKIT, awaited("asyncio", True), compute,
             N0, N_MAX, note="default: brief adaptive spin in the loop, then the hub"),
        Case("shmkit.Event pair, awaited, spin off (asyncio)", SHMKIT, awaited("asyncio", False),
             compute, N0, N_MAX, note="aio_configure(spin=False): every wait through the hub"),
        Case("shmkit.Event pair, awaited (uvloop)", SHMKIT, awaited("uvloop", True), compute,
             N0, N_MAX),
        Case("shmkit.Event pair, awaited, spin off (uvloop)", SHMKIT, awaited("uvloop", False),
             compute, N0, N_MAX),
        Case("shmkit.Queue pair, awaited get (asyncio)", SHMKIT, awaited_queue("asyncio", True),
             compute, N0, N_MAX, note="8 B messages, as the anchors"),
        Case("shmkit.Queue pair, awaited get, spin off (asyncio)", SHMKIT,
             awaited_queue("asyncio", False), compute, N0, N_MAX),
        Case("shmkit.Queue pair, awaited get (uvloop)", SHMKIT, awaited_queue("uvloop", True),
             compute, N0, N_MAX),
    ]


# -- many waiters ------------------------------------------------------------------------------

WAITERS, EVENTS = 10_000, 1_000


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def many_waiter(ctl, zone, names, go_name, loop_kind, window=1.0):
    import shmkit
    events = [shmkit.Event(n, zone=zone) for n in names]
    go = shmkit.Event(go_name, zone=zone)
    before = _threads()

    async def one_run():
        for e in events:
            e.clear()
        woke = 0

        async def waiter(ev):
            nonlocal woke
            if await ev.aio.wait(120):
                woke += 1

        tasks = [asyncio.ensure_future(waiter(events[i % len(events)])) for i in range(WAITERS)]
        while shmkit.aio_statistics()["waits"] < WAITERS:
            await asyncio.sleep(0.01)
        added = _threads() - before
        cpu0 = _cpu()
        await asyncio.sleep(window)
        cpu = (_cpu() - cpu0) / window           # per second of waiting
        go.set()
        await asyncio.gather(*tasks)
        t_end = time.perf_counter()
        go.clear()
        if woke != WAITERS:
            raise h.CaseFailed(f"{woke} of {WAITERS} coroutines woke")
        return {"t_end": t_end, "cpu": cpu, "threads": added}

    for _ in ctl.reps():
        ctl.report(**_run(one_run(), loop_kind))


def many_setter(ctl, zone, names, go_name):
    import shmkit
    events = [shmkit.Event(n, zone=zone) for n in names]
    go = shmkit.Event(go_name, zone=zone)
    for _ in ctl.reps():
        if not go.wait(120):
            raise h.CaseFailed("the waiting process never said go")
        t0 = time.perf_counter()
        for e in events:
            e.set()
        while go.is_set():      # the waiter clears go once every coroutine woke
            time.sleep(0.001)
        ctl.report(t0=t0)


def many_cases(quick: bool):
    def compute(n, reports):
        w, s = reports
        return {"cpu_waiting": w["cpu"] * 1000.0, "wake_all": (w["t_end"] - s["t0"]) * 1000.0,
                "threads": float(w["threads"])}

    def setup(loop_kind):
        def s(env):
            h.need_shmkit("Event", "aio")
            if loop_kind == "uvloop":
                h.need_module("uvloop")
            zone = env.zone(8 << 20)
            names = [env.unique(f"e{i}") for i in range(EVENTS)]
            import shmkit
            for n in names:
                shmkit.Event(n, zone=zone)
            go = env.unique("go")
            shmkit.Event(go, zone=zone)
            return [Role(many_waiter, (zone, names, go, loop_kind, 0.3 if quick else 1.0)),
                    Role(many_setter, (zone, names, go))]
        return s

    return [
        Case(f"shmkit Events, awaited ({loop})", SHMKIT, setup(loop), compute, fixed_n=1,
             note=f"{WAITERS:,} coroutines on {EVENTS:,} events")
        for loop in (("asyncio",) if quick else ("asyncio", "uvloop"))
    ]


def scenarios():
    return [
        Scenario(
            name="aio_pingpong",
            group="aio",
            title="awaited ping-pong round trip between two processes",
            description=("Two processes bounce a flag, each side awaiting in an asyncio event "
                         "loop. Round-trip time, median and 99th percentile."),
            metrics=[Metric("p50", "µs", higher_is_better=False),
                     Metric("p99", "µs", higher_is_better=False)],
            cases=lambda opts: pingpong_cases(),
            bar=h.bar_ratio(1.0, "p50 no worse than the sync sleeping ping-pong",
                            label="shmkit.Event pair, blocking (sleeping)"),
        ),
        Scenario(
            name="aio_many_waiters",
            group="aio",
            title=f"{WAITERS:,} coroutines awaiting {EVENTS:,} events set by another process",
            description=("CPU time of the waiting process per second of waiting, hub threads "
                         "added, and time until every coroutine is awake."),
            metrics=[Metric("cpu_waiting", "ms", higher_is_better=False),
                     Metric("wake_all", "ms", higher_is_better=False),
                     Metric("threads", "threads", higher_is_better=False)],
            cases=lambda opts: many_cases(opts.quick),
            bar=h.bar_at_least(50.0, "~0 CPU while waiting (< 50 ms per s)"),
        ),
    ]

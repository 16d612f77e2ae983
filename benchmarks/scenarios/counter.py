"""Shared counter increments per second, 1 and 2 processes.

Each process adds 1 n times.  After every run the parent checks the total: a counter
that loses increments fails the case instead of reporting a speed.
"""

from __future__ import annotations

import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario


def value_worker(ctl, value):
    lock = value.get_lock()
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            with lock:
                value.value += 1
        ctl.report(t0=t0, t1=time.perf_counter())


def counter_worker(ctl, counter):
    add = counter.add
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            add(1)
        ctl.report(t0=t0, t1=time.perf_counter())


def cases(procs: int):
    def compute(n, reports):
        return {"rate": h.rate(n * procs, reports)}

    def checker(read):
        def verify(total_n, reports):
            got, want = read(), total_n * procs
            if got != want:
                raise h.CaseFailed(f"lost updates: counter is {got}, {want} increments were made")
        return verify

    holder: dict = {}

    def mp_value(env):
        v = env.ctx.Value("q", 0)
        holder["mp"] = v
        return [Role(value_worker, (v,)) for _ in range(procs)]

    def shmkit_counter(env):
        Counter = h.need_shmkit("Counter", "add", "get")
        zone = env.zone(4 << 20)
        c = h.shmkit_call("shmkit.Counter(name, zone=...)", Counter, env.unique("counter"), zone=zone)
        holder["counter"] = c
        return [Role(counter_worker, (c,)) for _ in range(procs)]

    def shmkit_value(env):
        Value = h.need_shmkit("Value", "get_lock")
        zone = env.zone(4 << 20)
        v = h.shmkit_call("shmkit.Value(name, 'q', 0, zone=...)", Value, env.unique("value"), "q", 0, zone=zone)
        holder["value"] = v
        return [Role(value_worker, (v,)) for _ in range(procs)]

    n0, n_max = 2000, 100_000_000
    return [
        Case("multiprocessing.Value + its lock", ANCHOR, mp_value, compute, n0, n_max,
             verify=checker(lambda: holder["mp"].value), note="with v.get_lock(): v.value += 1"),
        Case("shmkit.Counter.add", SHMKIT, shmkit_counter, compute, n0, n_max,
             verify=checker(lambda: holder["counter"].get()), note="atomic, no lock"),
        Case("shmkit.Value + its lock", SHMKIT, shmkit_value, compute, n0, n_max,
             verify=checker(lambda: holder["value"].value)),
    ]


def scenarios():
    return [
        Scenario(
            name=f"counter_{procs}p",
            group="counter",
            title=f"shared counter increments, {procs} process{'es' if procs > 1 else ''}",
            description=(("One process adds" if procs == 1 else f"{procs} processes add")
                         + " 1 to one shared counter, n times each; increments per second, "
                         "the total checked after every run."),
            metrics=[Metric("rate", "increments/s")],
            cases=lambda opts, procs=procs: cases(procs),
        )
        for procs in (1, 2)
    ]

"""The Redis backend (shmkit.redis) beside raw redis-py, against the same private
redis-server: GET and SET of 8 B keys with 64 B values, plain (one round trip per
command) and pipelined (batches of 100)."""

from __future__ import annotations

import time

from .. import harness as h
from ..harness import ANCHOR, REFERENCE, SHMKIT, Case, Metric, Role, Scenario
from .dict import make_keys, stream, value_of

BATCH = 100


def raw_worker(ctl, port, pipelined):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    keys = make_keys()
    values = {k: value_of(k) for k in keys}
    pos = 0
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        pos += n
        vs = [values[k] for k in ks]
        t0 = time.perf_counter()
        if pipelined:
            for i in range(0, n, BATCH):
                p = r.pipeline(transaction=False)
                for k, v in zip(ks[i:i + BATCH], vs[i:i + BATCH]):
                    p.set(k, v)
                p.execute()
        else:
            for k, v in zip(ks, vs):
                r.set(k, v)
        t_set = time.perf_counter()
        if pipelined:
            for i in range(0, n, BATCH):
                p = r.pipeline(transaction=False)
                for k in ks[i:i + BATCH]:
                    p.get(k)
                got = p.execute()
        else:
            for k in ks:
                got = r.get(k)
        t_get = time.perf_counter()
        last = got[-1] if pipelined else got
        if last != vs[-1]:
            raise h.CaseFailed(f"redis returned {last!r} for {ks[-1]!r}")
        ctl.report(set_s=t_set - t0, get_s=t_get - t_set)
    r.close()


def shmkit_worker(ctl, port, name):
    from shmkit import redis as shmkit_redis

    d = shmkit_redis.Dict(name, url=f"redis://127.0.0.1:{port}")
    keys = make_keys()
    values = {k: value_of(k) for k in keys}
    pos = 0
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        pos += n
        vs = [values[k] for k in ks]
        t0 = time.perf_counter()
        for k, v in zip(ks, vs):
            d[k] = v
        t_set = time.perf_counter()
        for k in ks:
            got = d[k]
        t_get = time.perf_counter()
        if got != vs[-1]:
            raise h.CaseFailed(f"shmkit.redis.Dict returned {got!r} for {ks[-1]!r}")
        ctl.report(set_s=t_set - t0, get_s=t_get - t_set)


def compute(n, reports):
    r = reports[0]
    return {"GET": n / max(r["get_s"], 1e-12), "SET": n / max(r["set_s"], 1e-12)}


def cases(opts):
    def raw(pipelined):
        def setup(env):
            h.need_module("redis")
            return [Role(raw_worker, (env.redis_port(), pipelined))]
        return setup

    def shmkit(env):
        h.need_module("redis")
        try:
            from shmkit import redis as shmkit_redis
            getattr(shmkit_redis, "Dict")
        except (ImportError, AttributeError) as exc:
            raise h.Unavailable(h.NOT_YET, f"shmkit.redis.Dict is not there yet ({exc})") from None
        return [Role(shmkit_worker, (env.redis_port(), env.unique("rd")))]

    return [
        Case("redis-py", ANCHOR, raw(False), compute, 100, 10_000_000, note="one round trip per command"),
        Case(f"redis-py, pipelined x{BATCH}", REFERENCE, raw(True), compute, BATCH * 4, 10_000_000,
             note="what batching buys"),
        Case("shmkit.redis.Dict", SHMKIT, shmkit, compute, 100, 10_000_000),
    ]


def scenarios():
    return [Scenario(
        name="redis_backend",
        group="redis",
        title="Redis backend: GET and SET beside raw redis-py",
        description=("One process sets then gets 8 B keys with 64 B values on a private "
                     "redis-server (127.0.0.1), one command per round trip; operations per second. "
                     f"Raw redis-py pipelined in batches of {BATCH} is shown for scale."),
        metrics=[Metric("GET", "ops/s"), Metric("SET", "ops/s")],
        cases=cases,
        bar=h.bar_ratio(0.9, ">= 0.9x raw redis-py", label="redis-py"),
    )]

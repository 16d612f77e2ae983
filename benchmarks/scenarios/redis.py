"""The Redis backend (shmkit.RedisZone) beside raw redis-py, against the same private
redis-server on 127.0.0.1.

- ``redis_backend``: GET and SET of 8 B keys with 64 B values, one command per round trip:
  raw ``r.get``/``r.set`` beside ``RedisZone.dict`` (``d[k]``, ``d[k] = v``).
- ``redis_backend_batched``: the same in batches of 100: raw redis-py pipelined and raw
  MGET/MSET beside ``RedisDict.get_many``/``set_many``.
- ``redis_queue`` / ``redis_queue_batched``: 64 B messages put then got by one process:
  raw RPUSH/LPOP (pipelined, and LPOP with a count, for the batches) beside
  ``RedisZone.queue`` put/get (at-most-once, and at-least-once with task_done) and
  put_many/get_many.

Every case checks what it read back before its figure counts.
"""

from __future__ import annotations

import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario
from .dict import make_keys, stream, value_of

BATCH = 100
MSG = 64


# -- dict: workers ----------------------------------------------------------------------------

def raw_worker(ctl, port, mode):
    """mode: "plain" (one command per round trip), "pipelined" (BATCH per pipeline) or
    "mget" (MSET/MGET of BATCH keys)."""
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
        if mode == "pipelined":
            for i in range(0, n, BATCH):
                p = r.pipeline(transaction=False)
                for k, v in zip(ks[i:i + BATCH], vs[i:i + BATCH]):
                    p.set(k, v)
                p.execute()
        elif mode == "mget":
            for i in range(0, n, BATCH):
                r.mset(dict(zip(ks[i:i + BATCH], vs[i:i + BATCH])))
        else:
            for k, v in zip(ks, vs):
                r.set(k, v)
        t_set = time.perf_counter()
        if mode == "pipelined":
            for i in range(0, n, BATCH):
                p = r.pipeline(transaction=False)
                for k in ks[i:i + BATCH]:
                    p.get(k)
                got = p.execute()
        elif mode == "mget":
            for i in range(0, n, BATCH):
                got = r.mget(ks[i:i + BATCH])
        else:
            for k in ks:
                got = r.get(k)
        t_get = time.perf_counter()
        last = got if mode == "plain" else got[-1]
        if last != vs[-1]:
            raise h.CaseFailed(f"redis returned {last!r} for {ks[-1]!r}")
        ctl.report(set_s=t_set - t0, get_s=t_get - t_set)
    r.close()


def shmkit_worker(ctl, port, zone_name, batched):
    from shmkit import RedisZone

    zone = RedisZone(zone_name, f"redis://127.0.0.1:{port}/0")
    d = zone.dict("bench")
    keys = make_keys()
    values = {k: value_of(k) for k in keys}
    pos = 0
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        pos += n
        vs = [values[k] for k in ks]
        t0 = time.perf_counter()
        if batched:
            for i in range(0, n, BATCH):
                d.set_many(zip(ks[i:i + BATCH], vs[i:i + BATCH]))
        else:
            for k, v in zip(ks, vs):
                d[k] = v
        t_set = time.perf_counter()
        if batched:
            for i in range(0, n, BATCH):
                got = d.get_many(ks[i:i + BATCH])
            got = got[-1]
        else:
            for k in ks:
                got = d[k]
        t_get = time.perf_counter()
        if got != vs[-1]:
            raise h.CaseFailed(f"RedisZone.dict returned {got!r} for {ks[-1]!r}")
        ctl.report(set_s=t_set - t0, get_s=t_get - t_set)
    zone.destroy_all()
    zone.close()


def compute(n, reports):
    r = reports[0]
    return {"GET": n / max(r["get_s"], 1e-12), "SET": n / max(r["set_s"], 1e-12)}


# -- queue: workers ---------------------------------------------------------------------------

def raw_queue_worker(ctl, port, key, batched):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    msg = b"m" * MSG
    for n in ctl.reps():
        t0 = time.perf_counter()
        if batched:
            for i in range(0, n, BATCH):
                p = r.pipeline(transaction=False)
                for _ in range(min(BATCH, n - i)):
                    p.rpush(key, msg)
                p.execute()
        else:
            for _ in range(n):
                r.rpush(key, msg)
        t_put = time.perf_counter()
        got = 0
        if batched:
            while got < n:
                got += len(r.lpop(key, BATCH) or ())
        else:
            for _ in range(n):
                if r.lpop(key) is not None:
                    got += 1
        t_get = time.perf_counter()
        if got != n:
            raise h.CaseFailed(f"put {n} messages, got {got}")
        ctl.report(put_s=t_put - t0, get_s=t_get - t_put)
    r.delete(key)
    r.close()


def shmkit_queue_worker(ctl, port, zone_name, delivery, batched):
    from shmkit import RedisZone

    zone = RedisZone(zone_name, f"redis://127.0.0.1:{port}/0")
    q = zone.queue("bench", delivery=delivery)
    ack = delivery == "at-least-once"
    msg = b"m" * MSG
    for n in ctl.reps():
        t0 = time.perf_counter()
        if batched:
            for i in range(0, n, BATCH):
                q.put_many([msg] * min(BATCH, n - i))
        else:
            put = q.put
            for _ in range(n):
                put(msg)
        t_put = time.perf_counter()
        got = 0
        if batched:
            while got < n:
                k = len(q.get_many(BATCH))
                got += k
                if ack:
                    q.task_done(k)
        else:
            get = q.get
            done = q.task_done
            for _ in range(n):
                if get() == msg:
                    got += 1
                if ack:
                    done()
        t_get = time.perf_counter()
        if got != n:
            raise h.CaseFailed(f"put {n} messages, got {got} intact")
        ctl.report(put_s=t_put - t0, get_s=t_get - t_put)
    q.detach()
    zone.destroy_all()
    zone.close()


def compute_queue(n, reports):
    r = reports[0]
    return {"put": n / max(r["put_s"], 1e-12), "get": n / max(r["get_s"], 1e-12)}


# -- cases ------------------------------------------------------------------------------------

def _need_redis_zone():
    h.need_module("redis")
    try:
        from shmkit import RedisZone  # noqa: F401
    except (ImportError, AttributeError) as exc:
        raise h.Unavailable(h.NOT_YET, f"shmkit.RedisZone is not there yet ({exc})") from None


def dict_cases(batched):
    def raw(mode):
        def setup(env):
            h.need_module("redis")
            return [Role(raw_worker, (env.redis_port(), mode))]
        return setup

    def shmkit(env):
        _need_redis_zone()
        return [Role(shmkit_worker, (env.redis_port(), env.unique("rz"), batched))]

    n0 = BATCH * 4 if batched else 100
    if batched:
        return [
            Case(f"redis-py, pipelined x{BATCH}", ANCHOR, raw("pipelined"), compute, n0,
                 10_000_000, note="GET/SET in a pipeline per batch"),
            Case(f"redis-py, MGET/MSET x{BATCH}", ANCHOR, raw("mget"), compute, n0,
                 10_000_000, note="one command per batch"),
            Case(f"RedisZone.dict get_many/set_many x{BATCH}", SHMKIT, shmkit, compute, n0,
                 10_000_000, note="MGET/MSET"),
        ]
    return [
        Case("redis-py", ANCHOR, raw("plain"), compute, n0, 10_000_000,
             note="one round trip per command"),
        Case("RedisZone.dict", SHMKIT, shmkit, compute, n0, 10_000_000,
             note="d[k], d[k] = v: one GET/SET each"),
    ]


def queue_cases(batched):
    def raw(env):
        h.need_module("redis")
        return [Role(raw_queue_worker, (env.redis_port(), env.unique("rawq"), batched))]

    def shmkit(delivery):
        def setup(env):
            _need_redis_zone()
            return [Role(shmkit_queue_worker, (env.redis_port(), env.unique("rz"), delivery,
                                               batched))]
        return setup

    n0 = BATCH * 4 if batched else 100
    raw_label = (f"redis-py list, RPUSH pipelined x{BATCH} / LPOP {BATCH}" if batched
                 else "redis-py list, RPUSH / LPOP")
    how = f"put_many/get_many x{BATCH}" if batched else "put/get"
    return [
        Case(raw_label, ANCHOR, raw, compute_queue, n0, 10_000_000),
        Case(f"RedisZone.queue {how}", SHMKIT, shmkit("at-most-once"), compute_queue, n0,
             10_000_000, note="at-most-once (default)"),
        Case(f"RedisZone.queue {how} + task_done", SHMKIT, shmkit("at-least-once"),
             compute_queue, n0, 10_000_000, note="at-least-once: get moves, task_done acks"),
    ]


def scenarios():
    return [
        Scenario(
            name="redis_backend",
            group="redis",
            title="Redis backend: GET and SET beside raw redis-py",
            description=("One process sets then gets 8 B keys with 64 B values on a private "
                         "redis-server (127.0.0.1), one command per round trip; operations per "
                         "second."),
            metrics=[Metric("GET", "ops/s"), Metric("SET", "ops/s")],
            cases=lambda opts: dict_cases(False),
            bar=h.bar_ratio(0.9, ">= 0.9x raw redis-py", label="redis-py"),
        ),
        Scenario(
            name="redis_backend_batched",
            group="redis",
            title=f"Redis backend: GET and SET in batches of {BATCH}",
            description=(f"The same in batches of {BATCH} keys, one round trip per batch: raw "
                         "redis-py pipelined and MGET/MSET beside RedisZone.dict's "
                         "get_many/set_many; operations per second."),
            metrics=[Metric("GET", "ops/s"), Metric("SET", "ops/s")],
            cases=lambda opts: dict_cases(True),
            bar=h.bar_ratio(0.9, ">= 0.9x the best raw redis-py batch"),
        ),
        Scenario(
            name="redis_queue",
            group="redis",
            title="Redis backend: queue put and get beside a raw Redis list",
            description=(f"One process puts n {MSG} B messages, then gets them; messages per "
                         "second. Raw redis-py RPUSH/LPOP on a list beside RedisZone.queue "
                         "(a script per call: limits, task accounting, leases)."),
            metrics=[Metric("put", "msg/s"), Metric("get", "msg/s")],
            cases=lambda opts: queue_cases(False),
        ),
        Scenario(
            name="redis_queue_batched",
            group="redis",
            title=f"Redis backend: queue put_many/get_many of {BATCH} beside a raw Redis list",
            description=(f"The same in batches of {BATCH}: raw pipelined RPUSH and LPOP with "
                         "a count beside put_many/get_many; messages per second."),
            metrics=[Metric("put", "msg/s"), Metric("get", "msg/s")],
            cases=lambda opts: queue_cases(True),
        ),
    ]


"""Shared dictionary GET and SET: 100,000 keys of 8 bytes, values of 64 bytes.

The dictionary is filled before the workers start (not timed).  Each worker then reads
(GET) or overwrites (SET) n keys in a shuffled order; with 2 processes each starts at a
different place in that order.  The figure is operations per second, all processes
together.  Before timing, each worker checks it reads back the right value.
"""

from __future__ import annotations

import random
import time

from .. import harness as h
from ..harness import ANCHOR, REFERENCE, SHMKIT, Case, Metric, Role, Scenario

NKEYS = 100_000


def make_keys() -> list[str]:
    keys = [f"k{i:07d}" for i in range(NKEYS)]     # 8 bytes each
    random.Random(5).shuffle(keys)
    return keys


def value_of(key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    return (b"v:" + key).ljust(64, b".")            # 64 bytes


def stream(keys: list, n: int, offset: int) -> list:
    """n keys taken in order from ``offset``, wrapping around (built before timing)."""
    out = []
    i = offset % len(keys)
    while len(out) < n:
        take = min(n - len(out), len(keys) - i)
        out.extend(keys[i:i + take])
        i = 0
    return out


def _pairs(keys, items):
    return [(k, items[k]) for k in keys]


# -- roles ----------------------------------------------------------------------------------

def mapping_worker(ctl, d, op, offset, private):
    """GET (``d[k]``) or SET (``d[k] = v``) on any mapping: plain dict, Manager proxy,
    UltraDict, shmkit.Dict."""
    keys = make_keys()
    if private:   # the in-process reference: each process has its own dict
        d = {k: value_of(k) for k in keys}
    elif isinstance(d, _UltraDictRef):
        d = d()
    values = {k: value_of(k) for k in keys}
    probe = keys[offset % NKEYS]
    if d[probe] != values[probe]:
        raise h.CaseFailed(f"{probe!r} reads {d[probe]!r}, expected {values[probe]!r}")
    pos = offset
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        if op == "get":
            t0 = time.perf_counter()
            for k in ks:
                d[k]
            t1 = time.perf_counter()
        else:
            vs = [values[k] for k in ks]
            t0 = time.perf_counter()
            for k, v in zip(ks, vs):
                d[k] = v
            t1 = time.perf_counter()
        pos += n
        ctl.report(t0=t0, t1=t1)


def ultradict_factory(name):
    from UltraDict import UltraDict

    return UltraDict(name=name, create=False, shared_lock=True)


def lmdb_worker(ctl, path, op, offset):
    import lmdb

    env = lmdb.open(path, map_size=1 << 30, sync=False, metasync=False, max_readers=64, lock=True)
    keys = [k.encode() for k in make_keys()]
    probe = keys[offset % NKEYS]
    with env.begin() as txn:
        if txn.get(probe) != value_of(probe):
            raise h.CaseFailed(f"lmdb: {probe!r} reads back wrong")
    begin = env.begin
    pos = offset
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        if op == "get":
            t0 = time.perf_counter()
            for k in ks:        # one read transaction per GET, so every GET sees the latest SET
                with begin() as txn:
                    txn.get(k)
            t1 = time.perf_counter()
        else:
            vs = [value_of(k) for k in ks]
            t0 = time.perf_counter()
            for k, v in zip(ks, vs):   # one write transaction per SET
                with begin(write=True) as txn:
                    txn.put(k, v)
            t1 = time.perf_counter()
        pos += n
        ctl.report(t0=t0, t1=t1)
    env.close()


def redis_worker(ctl, port, op, offset):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    keys = make_keys()
    probe = keys[offset % NKEYS]
    if r.get(probe) != value_of(probe):
        raise h.CaseFailed(f"redis: {probe!r} reads back wrong")
    get, set_ = r.get, r.set
    pos = offset
    for n in ctl.reps():
        ks = stream(keys, n, pos)
        if op == "get":
            t0 = time.perf_counter()
            for k in ks:
                get(k)
            t1 = time.perf_counter()
        else:
            vs = [value_of(k) for k in ks]
            t0 = time.perf_counter()
            for k, v in zip(ks, vs):
                set_(k, v)
            t1 = time.perf_counter()
        pos += n
        ctl.report(t0=t0, t1=t1)
    r.close()


# -- cases ----------------------------------------------------------------------------------

def cases(op: str, procs: int):
    offsets = [i * NKEYS // procs for i in range(procs)]

    def compute(n, reports):
        return {"rate": h.rate(n * procs, reports)}

    def plain(env):
        return [Role(mapping_worker, (None, op, off, True)) for off in offsets]

    def manager(env):
        mgr = env.ctx.Manager()
        env.defer(mgr.shutdown)
        d = mgr.dict()
        d.update({k: value_of(k) for k in make_keys()})
        return [Role(mapping_worker, (d, op, off, False)) for off in offsets]

    def ultradict(env):
        UltraDict = import_ultradict().UltraDict
        h.need_module("atomics")   # UltraDict's shared_lock=True needs it; without it is not process-safe
        name = env.unique("ud")
        # a stream buffer big enough for many SETs between full dumps, a static dump area
        ud = UltraDict({k: value_of(k) for k in make_keys()}, name=name, create=True,
                       shared_lock=True, buffer_size=16 << 20, full_dump_size=32 << 20,
                       auto_unlink=False)

        def drop():
            ud.unlink()
            ud.close()

        env.defer(drop)
        return [Role(mapping_worker, (_UltraDictRef(name), op, off, False)) for off in offsets]

    def lmdb_case(env):
        lmdb = h.need_module("lmdb")
        import os

        path = os.path.join(env.tmpdir, env.unique("lmdb"))
        e = lmdb.open(path, map_size=1 << 30, sync=False, metasync=False)
        with e.begin(write=True) as txn:
            for k in make_keys():
                txn.put(k.encode(), value_of(k))
        e.close()
        return [Role(lmdb_worker, (path, op, off)) for off in offsets]

    def redis_case(env):
        redis = h.need_module("redis")
        port = env.redis_port()
        r = redis.Redis(host="127.0.0.1", port=port)
        r.flushall()
        keys = make_keys()
        for i in range(0, NKEYS, 5000):
            r.mset({k: value_of(k) for k in keys[i:i + 5000]})
        env.defer(r.close)
        env.defer(r.flushall)
        return [Role(redis_worker, (port, op, off)) for off in offsets]

    def shmkit(env):
        Dict = h.need_shmkit("Dict")
        zone = env.zone(128 << 20)
        name = env.unique("dict")
        d = h.shmkit_call("shmkit.Dict(name, capacity, zone=...)", Dict, name, 64 << 20, zone=zone)
        for k in make_keys():
            d[k] = value_of(k)
        return [Role(mapping_worker, (d, op, off, False)) for off in offsets]

    n0, n_max = 200, 20_000_000
    return [
        Case("dict (in-process)", REFERENCE, plain, compute, n0, n_max,
             note="one private dict per process: the ceiling, not shared" if procs > 1 else "not shared"),
        Case("multiprocessing.Manager().dict()", ANCHOR, manager, compute, n0, n_max),
        Case("UltraDict", ANCHOR, ultradict, compute, n0, n_max, note="shared_lock=True"),
        Case("lmdb (sync off)", ANCHOR, lmdb_case, compute, n0, n_max,
             note="one transaction per operation"),
        Case("redis-py (local redis-server)", ANCHOR, redis_case, compute, n0, n_max,
             note="TCP 127.0.0.1"),
        Case("shmkit.Dict", SHMKIT, shmkit, compute, n0, n_max),
    ]


def import_ultradict():
    """Import UltraDict without letting it switch off the resource tracker for every
    SharedMemory of this process: at import it monkey-patches
    multiprocessing.resource_tracker (bpo-38119), after which the parent's other
    segments would be unlinked untracked while spawned workers still register them."""
    from multiprocessing import resource_tracker as rt

    saved = rt.register, rt.unregister, dict(rt._CLEANUP_FUNCS)
    try:
        return h.need_module("UltraDict")
    finally:
        rt.register, rt.unregister = saved[0], saved[1]
        rt._CLEANUP_FUNCS.update(saved[2])


class _UltraDictRef:
    """Attach to the UltraDict by name inside the worker (called by mapping_worker)."""

    def __init__(self, name):
        self.name = name

    def __call__(self):
        return ultradict_factory(self.name)


def scenarios():
    out = []
    for op, bar1 in (("get", 10e6), ("set", 5e6)):
        for procs in (1, 2):
            if procs == 1:
                bar = h.bar_at_least(bar1, f">= {bar1 / 1e6:.0f}M ops/s"
                                     + (" (>= 4x UltraDict)" if op == "get" else " (>= 22x lmdb)"))
            else:
                bar = h.bar_scales(f"dict_{op}_1p", "2 processes scale: >= the 1-process figure")
            out.append(Scenario(
                name=f"dict_{op}_{procs}p",
                group="dict",
                title=f"dict {op.upper()}, 100k keys (8 B keys, 64 B values), {procs} process{'es' if procs > 1 else ''}",
                description=(("One process " + ("reads" if op == "get" else "overwrites"))
                             if procs == 1 else
                             (f"{procs} processes " + ("read" if op == "get" else "overwrite")))
                            + " keys of a shared 100k-key dictionary in shuffled order; "
                            "operations per second" + (", all processes together." if procs > 1 else "."),
                metrics=[Metric("rate", "ops/s")],
                cases=lambda opts, op=op, procs=procs: cases(op, procs),
                bar=bar,
            ))
    return out

"""Micro benchmark of shmkit.Dict beside its anchors (a guide for tuning, not the harness).

Scenario of BENCHMARKS.md: 100,000 keys of 8 bytes, values of 64 bytes; GET (``d[k]``)
and SET (``d[k] = v``) in a shuffled order, by 1 and by 2 spawned processes at once
(figures are operations per second, all processes together).  Anchors: a plain
in-process dict (the ceiling; each process has its own), multiprocessing.Manager().dict(),
UltraDict (shared_lock=True), lmdb (sync off, one transaction per operation).  Each figure
is the median of --reps repetitions after a warm-up, with min and max.

    python benchmarks/micro_dict.py [--reps 5] [--quick] [--only shmkit,plain,...]

The machine is shared and noisy: compare the ratios printed, which come from one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

NKEYS = 100_000


def make_keys():
    keys = [f"k{i:07d}" for i in range(NKEYS)]
    random.Random(5).shuffle(keys)
    return keys


def value_of(key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    return (b"v:" + key).ljust(64, b".")


# -- workers (run in spawned processes) ------------------------------------------------------

def _open(kind, arg):
    if kind == "plain":
        return {k: value_of(k) for k in make_keys()}
    if kind == "manager":
        return arg
    if kind == "ultradict":
        from UltraDict import UltraDict
        return UltraDict(name=arg, create=False, shared_lock=True)
    if kind == "shmkit":
        import shmkit
        zone_name, dict_name = arg
        return shmkit.Dict(dict_name, zone=shmkit.Zone(zone_name), create=False)
    if kind == "lmdb":
        import lmdb
        return lmdb.open(arg, map_size=1 << 30, sync=False, metasync=False, max_readers=64)
    raise ValueError(kind)


def worker(kind, arg, op, offset, n, reps, start, results):
    d = _open(kind, arg)
    keys = make_keys()
    order = keys[offset:] + keys[:offset]
    ks = (order * (n // NKEYS + 1))[:n]
    if kind == "lmdb":
        ks = [k.encode() for k in ks]
    vs = [value_of(k) for k in ks]
    times = []
    start.wait()
    for _ in range(reps + 1):  # the first is the warm-up
        if kind == "lmdb":
            begin = d.begin
            t0 = time.perf_counter()
            if op == "get":
                for k in ks:
                    with begin() as txn:
                        txn.get(k)
            else:
                for k, v in zip(ks, vs):
                    with begin(write=True) as txn:
                        txn.put(k, v)
            t1 = time.perf_counter()
        elif op == "get":
            t0 = time.perf_counter()
            for k in ks:
                d[k]
            t1 = time.perf_counter()
        else:
            t0 = time.perf_counter()
            for k, v in zip(ks, vs):
                d[k] = v
            t1 = time.perf_counter()
        times.append((t0, t1))
    results.put(times[1:])


# -- setting up each contender ---------------------------------------------------------------

def setup(kind, ctx, tmp):
    """Create and fill the shared dict; returns (arg for workers, cleanup)."""
    keys = make_keys()
    if kind == "plain":
        return None, lambda: None
    if kind == "manager":
        mgr = ctx.Manager()
        d = mgr.dict()
        d.update({k: value_of(k) for k in keys})
        return d, mgr.shutdown
    if kind == "ultradict":
        from multiprocessing import resource_tracker as rt
        saved = rt.register, rt.unregister
        from UltraDict import UltraDict
        rt.register, rt.unregister = saved
        name = f"ud{uuid.uuid4().hex[:8]}"
        ud = UltraDict({k: value_of(k) for k in keys}, name=name, create=True, shared_lock=True,
                       buffer_size=16 << 20, full_dump_size=32 << 20, auto_unlink=False)

        def drop():
            ud.unlink()
            ud.close()
        return name, drop
    if kind == "shmkit":
        import shmkit
        zname = f"micro-dict-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        zone = shmkit.Zone(zname, 128 << 20)
        d = shmkit.Dict("bench", 64 << 20, zone=zone)
        for k in keys:
            d[k] = value_of(k)

        def drop():
            d.close()
            zone.close()
            zone.unlink()
        return (zname, "bench"), drop
    if kind == "lmdb":
        import lmdb
        path = os.path.join(tmp, f"lmdb-{uuid.uuid4().hex[:6]}")
        env = lmdb.open(path, map_size=1 << 30, sync=False, metasync=False)
        with env.begin(write=True) as txn:
            for k in keys:
                txn.put(k.encode(), value_of(k))
        env.close()
        return path, lambda: None
    raise ValueError(kind)


def measure(kind, op, procs, n, reps, ctx, tmp):
    arg, cleanup = setup(kind, ctx, tmp)
    try:
        start = ctx.Barrier(procs)
        results = ctx.Queue()
        ps = [ctx.Process(target=worker,
                          args=(kind, arg, op, i * NKEYS // procs, n, reps, start, results))
              for i in range(procs)]
        for p in ps:
            p.start()
        per_proc = [results.get(timeout=600) for _ in ps]
        for p in ps:
            p.join(60)
        rates = []
        for r in range(reps):
            t0 = min(pp[r][0] for pp in per_proc)
            t1 = max(pp[r][1] for pp in per_proc)
            rates.append(n * procs / (t1 - t0))
        return statistics.median(rates), min(rates), max(rates)
    finally:
        cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer operations per repetition")
    ap.add_argument("--only", default="plain,manager,ultradict,lmdb,shmkit")
    ap.add_argument("--ops", default="get,set")
    ap.add_argument("--procs", default="1,2")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    kinds = args.only.split(",")
    n_fast = 100_000 if args.quick else 500_000
    sizes = {"plain": n_fast, "shmkit": n_fast, "manager": 5_000 if args.quick else 20_000,
             "ultradict": 20_000 if args.quick else 100_000, "lmdb": 50_000 if args.quick else 200_000}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.reps} reps, "
          f"median (min..max) in ops/s")
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            for procs in map(int, args.procs.split(",")):
                print(f"\n{op.upper()}, {procs} process{'es' if procs > 1 else ''}:")
                figures = {}
                for kind in kinds:
                    try:
                        med, lo, hi = measure(kind, op, procs, sizes[kind], args.reps, ctx, tmp)
                    except ImportError as e:
                        print(f"  {kind:10s} missing ({e})")
                        continue
                    except Exception as e:  # an anchor that cannot run here is reported
                        print(f"  {kind:10s} failed: {type(e).__name__}: {e}")
                        continue
                    figures[kind] = med
                    print(f"  {kind:10s} {med / 1e6:8.3f}M  ({lo / 1e6:.3f}..{hi / 1e6:.3f})",
                          flush=True)
                if "shmkit" in figures:
                    for kind, f in figures.items():
                        if kind != "shmkit":
                            print(f"  shmkit / {kind}: {figures['shmkit'] / f:.2f}x")


if __name__ == "__main__":
    main()

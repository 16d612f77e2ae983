"""RedisZone beside raw redis-py, interleaved: a ratio that survives a noisy machine.

    python benchmarks/micro_redis.py [--rounds 40] [--block 200]

The official scenarios (``shmkit bench --only redis``) run each case after the other, so
on a loaded machine the anchor and shmkit rows see different loads and their ratio swings
(0.3x to 1.7x between two runs here).  This script starts its own redis-server and
alternates small blocks of the raw and the shmkit operation (in both orders), many
rounds, then reports the median of the per-round ratios with its interquartile range:
load that drifts affects both sides of each round alike.  One client process, as in the
scenarios: 8 B keys, 64 B values, 64 B messages, batches of 100.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--block", type=int, default=200, help="operations per timed block")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import redis

    from benchmarks.redis_server import RedisServer
    from shmkit import RedisZone

    tmp = tempfile.mkdtemp(prefix="shmkit-micro-redis-")
    server = RedisServer.start(tmp)
    if not isinstance(server, RedisServer):
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"no redis-server: {server.note}")
        return 1
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        r = redis.Redis.from_url(url)
        zone = RedisZone(f"micro-{os.getpid()}", url)
        d = zone.dict("d")
        q = zone.queue("q")
        n = args.block
        keys = [f"k{i:07d}" for i in range(n)]
        val = b"v" * 64
        batches = [keys[i:i + 100] for i in range(0, n, 100)]
        for k in keys:
            r.set(k, val)
            d[k] = val

        def raw_get():
            for k in keys:
                r.get(k)

        def shm_get():
            for k in keys:
                d[k]

        def raw_set():
            for k in keys:
                r.set(k, val)

        def shm_set():
            for k in keys:
                d[k] = val

        def raw_mget():
            for b in batches:
                r.mget(b)

        def shm_mget():
            for b in batches:
                d.get_many(b)

        def raw_mset():
            for b in batches:
                r.mset({k: val for k in b})

        def shm_mset():
            for b in batches:
                d.set_many({k: val for k in b})

        def raw_put_get():
            for _ in range(n):
                r.rpush("rawq", val)
            for _ in range(n):
                r.lpop("rawq")

        def shm_put_get():
            for _ in range(n):
                q.put(val)
            for _ in range(n):
                q.get_nowait()

        pairs = [("GET", raw_get, shm_get, n), ("SET", raw_set, shm_set, n),
                 ("MGET x100", raw_mget, shm_mget, n), ("MSET x100", raw_mset, shm_mset, n),
                 ("queue put+get", raw_put_get, shm_put_get, 2 * n)]
        ratios = {name: [] for name, *_ in pairs}
        rates = {name: ([], []) for name, *_ in pairs}
        for rnd in range(args.rounds):
            for name, raw, shm, ops in pairs:
                order = [(0, raw), (1, shm)] if rnd % 2 == 0 else [(1, shm), (0, raw)]
                t = [0.0, 0.0]
                for side, fn in order:
                    t0 = time.perf_counter()
                    fn()
                    t[side] = time.perf_counter() - t0
                ratios[name].append(t[0] / t[1])         # > 1: shmkit faster
                rates[name][0].append(ops / t[0])
                rates[name][1].append(ops / t[1])
        load = os.getloadavg()
        print(f"redis-server {server.version}, {args.rounds} rounds of {n} operations, "
              f"load {load[0]:.1f}")
        print(f"{'operation':<15} {'raw redis-py':>14} {'RedisZone':>12} {'ratio':>7}  IQR")
        for name, *_ in pairs:
            qs = statistics.quantiles(ratios[name], n=4)
            print(f"{name:<15} {statistics.median(rates[name][0]):>12,.0f}/s "
                  f"{statistics.median(rates[name][1]):>10,.0f}/s "
                  f"{statistics.median(ratios[name]):>6.2f}x  {qs[0]:.2f}-{qs[2]:.2f}")
        zone.destroy_all()
        zone.close()
        r.delete("rawq")
        r.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Worker processes sharing a rate limiter and a cache through one shmkit.Dict.

This is what OpenResty applications do with ``lua_shared_dict``, for a pool of Python
workers (gunicorn, uwsgi or multiprocessing ones alike):

- rate limiting: ``incr(key, 1, init=0, init_ttl=window)`` counts a client's requests in
  a fixed window; the first request of a window creates the counter with its TTL, the
  others add to it atomically, whichever worker serves them;
- caching: ``get`` first; on a miss exactly one worker computes the value while holding a
  short "lock" made with ``add`` (which succeeds for one process only), the others serve
  the expired value from ``get_stale`` meanwhile, or wait a little for the new one;
- statistics: ``incr`` counters that every worker updates, and ``statistics()``.

    python examples/worker_pool_cache.py [--workers 4] [--requests 2000] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time

import shmkit

RATE_LIMIT = 300         # requests per client per window
WINDOW = 1.0             # seconds
CACHE_TTL = 0.3          # seconds a computed page stays fresh
COMPUTE_TIME = 0.02      # seconds the "backend" takes per page
REQUEST_TIME = 0.001     # seconds a worker spends on a request besides the page


def backend(page: str) -> bytes:
    """The slow thing the cache protects (a database query, a template render...)."""
    time.sleep(COMPUTE_TIME)
    return f"<html>{page} rendered by pid {os.getpid()} at {time.time():.3f}</html>".encode()


def allowed(d: shmkit.Dict, client: str) -> bool:
    """Fixed-window rate limiting: at most RATE_LIMIT requests per WINDOW per client."""
    window = int(time.time() / WINDOW)
    count = d.incr(f"rate:{client}:{window}", 1, init=0, init_ttl=WINDOW * 2)
    return bool(count <= RATE_LIMIT)


def cached_page(d: shmkit.Dict, page: str) -> bytes:
    key = f"page:{page}"
    value: bytes | None = d.get(key)
    if value is not None:
        d.incr("stat:hits", 1, init=0)
        return bytes(value)
    # a miss: one worker recomputes; add() succeeds for exactly one of them
    if d.add(f"lock:{page}", os.getpid(), ttl=5 * COMPUTE_TIME + 1):
        try:
            value = backend(page)
            d.incr("stat:computed", 1, init=0)
            d.set(key, value, ttl=CACHE_TTL)
            return value
        finally:
            d.delete(f"lock:{page}")
    # someone else is computing it: serve the stale copy if there is one, else wait
    stale: bytes | None
    stale, _flags, _is_stale = d.get_stale(key)
    if stale is not None:
        d.incr("stat:stale", 1, init=0)
        return bytes(stale)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        value = d.get(key)
        if value is not None:
            d.incr("stat:waited", 1, init=0)
            return bytes(value)
        time.sleep(0.001)
    return backend(page)   # the computing worker died: do it ourselves


def worker(d: shmkit.Dict, requests: int, seed: int) -> None:
    """Serve requests from ten clients, one of them noisy, for twenty pages (the Dict
    came here pickled: it reattaches by zone and name)."""
    rnd = random.Random(seed)
    clients = [f"10.0.0.{i}" for i in range(10)]
    pages = [f"/article/{i}" for i in range(20)]
    for _ in range(requests):
        time.sleep(REQUEST_TIME)
        client = "10.0.0.66" if rnd.random() < 0.4 else rnd.choice(clients)
        if not allowed(d, client):
            d.incr("stat:limited", 1, init=0)
            continue
        body = cached_page(d, rnd.choice(pages))
        assert body.startswith(b"<html>/article/")
        d.incr("stat:served", 1, init=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--requests", type=int, default=1500, help="per worker")
    ap.add_argument("--quick", action="store_true", help="300 requests per worker")
    args = ap.parse_args()
    if args.quick:
        args.requests = 300
    ctx = mp.get_context("spawn")
    zone = shmkit.Zone(f"example-cache-{os.getpid()}", 16 << 20)   # a private zone
    try:
        d = zone.dict("cache", 4 << 20)
        t0 = time.monotonic()
        procs = [ctx.Process(target=worker, args=(d, args.requests, i))
                 for i in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.monotonic() - t0
        if any(p.exitcode != 0 for p in procs):
            raise SystemExit("FAILED: a worker failed")

        def get(name: str) -> int:
            return int(d.get(f"stat:{name}", 0))

        total = args.workers * args.requests
        print(f"{args.workers} workers, {total} requests in {elapsed:.2f} s")
        print(f"  served {get('served')}, rate-limited {get('limited')} "
              f"(at most {RATE_LIMIT} per client per {WINDOW:g} s)")
        print(f"  cache hits {get('hits')}, stale copies served {get('stale')}, "
              f"waited for a page {get('waited')}, pages computed {get('computed')}")
        st = d.statistics()
        print(f"  dict: {st.items} items, {st.hits} hits, {st.misses} misses, "
              f"{st.memory // 1024} KiB in the zone, {st.free_space // 1024} KiB free")
        problems = []
        if get("served") + get("limited") != total:
            problems.append("a request was neither served nor rate-limited")
        if not 0 < get("computed") < get("served") // 2:
            problems.append("the cache did not spare the backend")
        hits = get("hits") + get("stale") + get("waited") + get("computed")
        if hits != get("served"):
            problems.append(f"served {get('served')} pages, but {hits} were accounted for")
    finally:
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        raise SystemExit(1)
    print("OK: every request was served or rate-limited exactly once, across workers, and "
          "the shared cache computed each page only when it had to")


if __name__ == "__main__":
    main()

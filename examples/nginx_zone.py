"""nginx-style workers sharing a zone: a master declares it, forks workers, and every
worker finds the zone and its named objects (ngx_shared_memory_add + ngx_slab).

    python examples/nginx_zone.py

What nginx does, and the shmkit call that does the same here:

    ngx_shared_memory_add(cf, &name, size, tag)    Zone(name, size, tag=..., init=init_zone)
    shm_zone->init = ngx_..._init_zone             init_zone(zone): runs once, in the
                                                   process that creates the zone
    fork() of the worker processes                 os.fork(): workers inherit the mapping
    ngx_slab_alloc_locked / ngx_slab_free_locked   zone.alloc(n) / zone.free(off)
    the zone's rbtree of limit_req nodes           zone.dict("limit_req").incr(...)
    ngx_shmtx_lock(&shpool->mutex)                 with zone.lock("upstream"): ...
    "nginx -s reload" with the same zone           Zone(name, size, tag) again: the same
                                                   zone, its data kept, init not re-run
    a zone declared again with another size        ZoneMismatchError naming both sizes
    (nginx: "the size ... of shared memory zone
    ... conflicts with already declared size")

The master checks what the workers did: every request counted once, every per-client
limit exact, the slab back to its starting use after the workers freed their buffers,
zone.check() clean.  Exits 0 only if all of that held.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import traceback

import shmkit

WORKERS = 4
REQUESTS = 3000               # per worker
CLIENTS = 20
LIMIT = 580                   # requests a client may make (limit_req, simplified)
ZONE_SIZE = 4 << 20
TAG = "limit_req"             # nginx tags a zone with the module that declared it


def init_zone(zone: shmkit.Zone) -> None:
    """The module's init_zone callback: runs exactly once, in the creating process."""
    zone.dict("limit_req", 1 << 20)          # client -> requests seen
    zone.counter("requests")
    zone.counter("init_runs").add(1)
    zone.array("upstream_fails", "q", [0] * 4)
    zone.lock("upstream")


def worker(zone: shmkit.Zone, index: int) -> None:
    """One worker process, forked from the master: its zone handle is inherited, its
    objects are found by name (nothing else is passed down)."""
    limits = zone.dict("limit_req")
    requests = zone.counter("requests")
    fails = zone.array("upstream_fails", "q", 4)
    upstream = zone.lock("upstream")
    rnd = random.Random(index)
    accepted = rejected = 0
    for r in range(REQUESTS):
        client = f"10.0.0.{rnd.randrange(CLIENTS)}"   # any worker may serve any client
        seen = limits.incr(f"limit:{client}", 1, init=0)     # atomic, whoever serves it
        if seen > LIMIT:
            rejected += 1
        else:
            accepted += 1
        requests.inc()
        # a per-request buffer from the zone's slab, as nginx modules allocate nodes
        size = rnd.choice((24, 100, 700, 2000, 5000))
        off = zone.alloc(size)
        view = zone.view(off, size)
        view[:] = bytes([index]) * size
        assert bytes(view[:8]) == bytes([index]) * 8 and zone.usable_size(off) >= size
        view.release()
        zone.free(off)
        if r % 97 == 0:                                      # an upstream failed
            with upstream:
                fails[r % 4] += 1
    limits.set(f"worker:{index}", (accepted, rejected))


def fork_worker(zone: shmkit.Zone, index: int) -> int:
    pid = os.fork()
    if pid == 0:                                             # the worker process
        code = 0
        try:
            worker(zone, index)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


RELOAD = """
import sys, shmkit
from shmkit import ZoneMismatchError
name, size, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def init_zone(zone):
    raise SystemExit("init_zone ran again on reload")
z = shmkit.Zone(name, size, tag=tag, init=init_zone)   # the same declaration: same zone
print(z.counter("requests").get(), z.counter("init_runs").get(), len(z.objects()))
z.close()
try:
    shmkit.Zone(name, size * 2, tag=tag)                # nginx refuses a size change
except ZoneMismatchError as e:
    print("refused:", e)
"""


def main() -> int:
    name = f"nginx-example-{os.getpid()}"
    zone = shmkit.Zone(name, ZONE_SIZE, tag=TAG, init=init_zone)   # in the master
    problems = []
    try:
        print(f"master {os.getpid()}: zone {name!r}, {ZONE_SIZE >> 20} MiB, tag {TAG!r}, "
              f"objects: {', '.join(o.name for o in zone.objects())}")
        baseline = {c.size: c.used for c in zone.statistics().classes}
        pids = [fork_worker(zone, i) for i in range(WORKERS)]
        print(f"master: forked {WORKERS} workers {pids}, {REQUESTS} requests each")
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                problems.append(f"worker {pid} failed (status {status})")

        limits = zone.dict("limit_req")
        total = WORKERS * REQUESTS
        requests = zone.counter("requests").get()
        per_client = {k: limits[k] for k in limits.keys()
                      if isinstance(k, str) and k.startswith("limit:")}
        accepted = sum(limits[f"worker:{i}"][0] for i in range(WORKERS))
        rejected = sum(limits[f"worker:{i}"][1] for i in range(WORKERS))
        expect_accepted = sum(min(n, LIMIT) for n in per_client.values())
        fails = list(zone.array("upstream_fails", "q", 4))
        print(f"requests counted: {requests} of {total}; {len(per_client)} clients, "
              f"{sum(per_client.values())} requests in their limit_req nodes")
        print(f"accepted {accepted}, rejected {rejected} (limit {LIMIT} per client: "
              f"expected {expect_accepted} accepted); upstream failures {fails}")
        if requests != total or sum(per_client.values()) != total:
            problems.append("a request was lost or counted twice")
        if accepted != expect_accepted or accepted + rejected != total:
            problems.append("the per-client limits were not applied exactly")
        if sum(fails) != WORKERS * len(range(0, REQUESTS, 97)):
            problems.append(f"upstream failures lost: {fails}")

        stats = zone.statistics()
        used_now = {c.size: c.used for c in stats.classes}
        reqs = sum(c.reqs for c in stats.classes)
        print(f"slab: {reqs} chunk allocations served, chunks in use {sum(used_now.values())} "
              f"(before the workers: {sum(baseline.values())}), page runs {stats.page_reqs}, "
              f"failed {stats.page_fails + sum(c.fails for c in stats.classes)}")
        if used_now != baseline:
            problems.append(f"slab chunks leaked: {baseline} -> {used_now}")
        problems += zone.check()

        r = subprocess.run([sys.executable, "-c", RELOAD, name, str(ZONE_SIZE), TAG],
                           capture_output=True, text=True, timeout=60)
        print("reload (another process declares the zone again):",
              r.stdout.strip().replace("\n", "\n    "))
        got = r.stdout.split("\n")[0].split() if r.returncode == 0 else []
        if got != [str(total), "1", str(len(zone.objects()))]:
            problems.append(f"reload did not find the same zone: {r.stdout!r} {r.stderr!r}")
        if "refused:" not in r.stdout or str(ZONE_SIZE) not in r.stdout:
            problems.append("a declaration with another size was not refused")
        if zone.counter("init_runs").get() != 1:
            problems.append("init_zone ran more than once")
    finally:
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print(f"OK: {WORKERS} forked workers found the zone and its objects by name; "
          f"{WORKERS * REQUESTS} requests counted exactly, limits exact, slab balanced, "
          "init ran once, a reload reused the zone")
    return 0


if __name__ == "__main__":
    sys.exit(main())

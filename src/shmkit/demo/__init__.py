"""``shmkit demo``: shmkit live across several processes, on defaults.

Four short acts, each in spawned processes sharing one zone that the demo creates and
removes at the end:

1. a queue: producers and consumers moving small messages, live throughput;
2. camera frames: a producer publishing 1920x1080x3 frames through a Board, several
   consumers taking the newest one zero-copy;
3. a lock that survives a crash: workers increment a shared Value under a Lock; one is
   SIGKILLed while holding it; another takes it over at once and the total is exact;
4. a shared dict: worker processes counting requests and rate-limiting clients with
   ``incr`` and TTLs, as web workers would.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time
from typing import Any

from ..zone import Zone
from . import frames, queue

__all__ = ["main"]


def _say(text: str = "") -> None:
    print(text, flush=True)


# -- act 3: a lock that survives a crash ---------------------------------------------------

def _increment_worker(zone: Zone, rounds: int, victim: bool, workers: int) -> None:
    lock = zone.lock("demo-lock")
    start = zone.barrier("demo-start", workers)
    total = zone.value("demo-total", "q", 0, lock=False)  # protected by demo-lock
    died_at = zone.counter("demo-died-at")                # CLOCK_MONOTONIC ns, system-wide
    taken_at = zone.counter("demo-taken-at")
    taken_by = zone.counter("demo-taken-by")
    start.wait(60)  # all contend from the same moment
    for i in range(rounds):
        with lock:
            if lock.owner_died:
                taken_at.set(time.monotonic_ns())
                taken_by.set(os.getpid())
            total.value += 1
            if victim and i == rounds // 2:
                died_at.set(time.monotonic_ns())
                os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lock


def _act_lock(zone: Zone, ctx: Any, workers: int = 3, rounds: int = 20000) -> dict[str, Any]:
    _say("3. a lock that survives a crash")
    procs = [ctx.Process(target=_increment_worker, args=(zone, rounds, i == 0, workers))
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    victim = procs[0]
    _say(f"   {workers} workers increment a shared Value under a Lock, {rounds} times each;")
    _say(f"   worker {victim.pid} was SIGKILLed while holding the lock "
         f"(exit code {victim.exitcode})")
    died = zone.counter("demo-died-at").get()
    taken = zone.counter("demo-taken-at").get()
    taken_by = zone.counter("demo-taken-by").get()
    total = zone.value("demo-total", "q", 0, lock=False).value
    expected = rounds * (workers - 1) + rounds // 2 + 1
    recovery_ms = (taken - died) / 1e6 if died and taken else float("nan")
    _say(f"   worker {taken_by}, waiting for it, acquired it {recovery_ms:.1f} ms after the "
         f"death, learning that its owner died (lock.owner_died)")
    _say(f"   total {total} increments, expected {expected}: "
         f"{'exact' if total == expected else 'WRONG'}")
    _say()
    return {"total": total, "expected": expected, "recovery_ms": recovery_ms}


# -- act 4: a shared dict as a worker pool's cache and rate limiter ----------------------------

def _web_worker(zone: Zone, requests: int, clients: int, limit: int) -> None:
    d = zone.dict("demo-dict")
    served = limited = 0
    for i in range(requests):
        client = f"client-{(i * 7 + os.getpid()) % clients}"
        # a fixed-window rate limiter: the first incr creates the key with a 1 s TTL
        if d.incr(f"rate:{client}", 1, init=0, init_ttl=1.0) > limit:
            limited += 1
            continue
        d.incr("requests-served", 1, init=0)
        served += 1
        if i % 100 == 0:
            d.set(f"last-seen:{client}", time.time(), ttl=30)
    d.incr("requests-limited", limited, init=0)


def _act_dict(zone: Zone, ctx: Any, workers: int = 4, requests: int = 20000, clients: int = 50,
              limit: int = 300) -> dict[str, Any]:
    _say("4. a shared dict: web workers counting requests and rate-limiting clients")
    d = zone.dict("demo-dict", 4 << 20)
    t0 = time.monotonic()
    procs = [ctx.Process(target=_web_worker, args=(zone, requests, clients, limit))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    secs = time.monotonic() - t0
    served = d.get("requests-served") or 0
    limited = d.get("requests-limited") or 0
    _say(f"   {workers} workers handled {workers * requests} requests in {secs:.1f} s: "
         f"{served} served, {limited} rate-limited; "
         f"served + limited = {served + limited} ({'exact' if served + limited == workers * requests else 'WRONG'})")
    st = d.statistics()
    _say(f"   the dict holds {len(d)} keys; hits {st.hits}, misses {st.misses}")
    _say()
    return {"served": served, "limited": limited, "requests": workers * requests}


# -- the show ----------------------------------------------------------------------------------

def run(duration: float = 3.0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {}
    _say(f"shmkit demo: processes sharing memory through shmkit (pid {os.getpid()})")
    _say()
    _say("1. a queue: producers and consumers in separate processes")
    results["queue"] = queue.run(duration=duration, print=lambda s: _say("   " + s.strip()))
    _say()
    _say("2. camera frames: 1920x1080x3 frames through a Board, newest frame zero-copy")
    results["frames"] = frames.run(duration=duration, consumers=3, fps=60.0)
    _say()
    name = f"shmkit-demo-{os.getpid()}-zone"
    zone = Zone(name, 32 << 20, max_size=256 << 20)
    try:
        results["lock"] = _act_lock(zone, ctx)
        results["dict"] = _act_dict(zone, ctx)
        _say("the demo zone now holds:")
        for o in zone.objects():
            _say(f"   {o.name:<18} {o.type:<8} {o.size:>9} bytes")
        problems = zone.check()
        _say(f"zone.check(): {'consistent' if not problems else problems}")
    finally:
        zone.close()
        zone.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shmkit demo", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds for each of the timed acts (default 3)")
    args = parser.parse_args(argv)
    try:
        run(args.duration)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

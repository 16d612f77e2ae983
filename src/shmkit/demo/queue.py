"""Act 1 of ``shmkit demo``: producers and consumers in separate processes moving small
messages through one shmkit.Queue, with the live throughput printed every half second."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any

from .._errors import ClosedError, QueueEmpty, QueueFull
from ..queue import Queue
from ..zone import Zone

__all__ = ["run"]


# The children run until the parent closes the queue (ClosedError), however long they
# took to start; `limit` only bounds them if the parent is gone.
def _producer(zone: Zone, name: str, size: int, limit: float, batch: int) -> None:
    q = Queue(name, zone=zone)
    msg = bytes(size)
    msgs = [msg] * batch
    while time.monotonic() < limit:
        try:
            q.put_many(msgs, timeout=0.2)
        except QueueFull:
            pass
        except ClosedError:
            break


def _consumer(zone: Zone, name: str, limit: float) -> None:
    q = Queue(name, zone=zone)
    while time.monotonic() < limit:
        try:
            q.get_many(4096, timeout=0.2)
        except QueueEmpty:
            pass
        except ClosedError:
            break


def run(duration: float = 5.0, producers: int = 2, consumers: int = 2, size: int = 64,
        batch: int = 256, print: Callable[[str], Any] = print) -> dict[str, Any]:
    """Producers and consumers in spawned processes on one queue, printing the live
    throughput every half second.  Returns {"messages", "seconds", "rate", "drops"}."""
    ctx = mp.get_context("spawn")
    zname = f"shmkit-demo-{os.getpid()}"
    zone = Zone(zname, 64 << 20)
    procs: list[Any] = []
    try:
        q = Queue("demo", 4 << 20, zone=zone)
        start_by = time.monotonic() + 60.0  # spawned children start in ~1 s, slower when loaded
        limit = start_by + duration + 10.0
        procs = [ctx.Process(target=_consumer, args=(zone, "demo", limit))
                 for _ in range(consumers)]
        procs += [ctx.Process(target=_producer, args=(zone, "demo", size, limit, batch))
                  for _ in range(producers)]
        for p in procs:
            p.start()
        print(f"queue demo: {producers} producer(s) -> {consumers} consumer(s), {size}-byte "
              f"messages, batches of {batch}, {duration:.0f} s")
        while q.statistics().gets == 0:
            if time.monotonic() > start_by:
                raise RuntimeError("queue demo: no message got through in 60 s (did the "
                                   "child processes start?)")
            time.sleep(0.01)
        t0, g0 = time.monotonic(), q.statistics().gets
        last_t, last_g = t0, g0
        while time.monotonic() < t0 + duration:
            time.sleep(0.5)
            st = q.statistics()
            now = time.monotonic()
            print(f"  {now - t0:5.1f} s  {(st.gets - last_g) / (now - last_t) / 1e6:8.2f} M msg/s"
                  f"  depth {st.depth:7d}  waits {st.waits}")
            last_t, last_g = now, st.gets
        st = q.statistics()
        total, secs = st.gets - g0, time.monotonic() - t0
        q.close()
        for p in procs:
            p.join(10)
        result = {"messages": total, "seconds": secs, "rate": total / secs, "drops": st.drops}
        print(f"  total {total} messages in {secs:.1f} s: {total / secs / 1e6:.2f} M msg/s")
        return result
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        zone.close()
        zone.unlink()

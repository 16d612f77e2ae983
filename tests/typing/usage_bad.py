"""Mistakes a type checker must catch in code using shmkit.

Every line marked ``# expect-error`` must be reported by mypy --strict AND by pyright, and
nothing else may be (tests/typing/check_bad.py compares; make typecheck runs it).  Never
run: the calls are wrong on purpose.
"""

from __future__ import annotations

import shmkit


def mistakes(zone: shmkit.Zone) -> None:
    shmkit.Queue(123)  # expect-error
    zone.queue("q", capacity="1 MiB")  # expect-error
    zone.dict("d", 1.5)  # expect-error
    q = zone.queue("q")
    q.put(b"x", timeout="soon")  # expect-error
    lock = zone.lock("l")
    lock.acquire(blocking="yes")  # expect-error
    counter = zone.counter("n")
    total: str = counter.add(1)  # expect-error
    stats: shmkit.DictStats = zone.statistics()  # expect-error
    _ = shmkit.NoSuchThing  # expect-error
    zone.alloc("100")  # expect-error
    shmkit.Segment("frames", "c", size="big")  # expect-error
    board = zone.board("b", 4096)
    board.publish_bytes("text, not bytes")  # expect-error
    zone.dict("d").get_keys("10")  # expect-error
    zone.event("e").wait(timeout=[1])  # expect-error
    shmkit.Lock("l", zone="not a zone")  # expect-error
    zone.barrier("b", parties="two")  # expect-error
    del total, stats

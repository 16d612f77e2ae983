# pyright: strict
"""Typed use of the public API, as a user writes it: must pass mypy --strict and pyright
in strict mode (make typecheck), and runs for real against a zone
(tests/test_typing_usage.py), so every annotation below is also what happens.

Each assignment to an annotated name checks a return type; a wrong annotation in the
package makes one of the checkers fail here.
"""

from __future__ import annotations

import queue
from collections.abc import KeysView

import numpy as np

import shmkit
from shmkit import (Board, BoardStats, Counter, Dict, DictStats, Event, Lock, LockStats,
                    ObjectInfo, Queue, QueueEmpty, QueueStats, RLock, SharedConfig,
                    SharedNDArray, ShmkitError, Zone, ZoneStats)


def use(zone: Zone) -> None:
    # zone: allocator, directory, statistics
    off: int = zone.alloc(100, zero=True)
    view: memoryview = zone.view(off, 100)
    view[0] = 1
    view.release()
    zone.free(off)
    info: ObjectInfo = zone.find_or_create("raw", 64)[0]
    assert info.type == "raw"
    zst: ZoneStats = zone.statistics()
    free: int = zst.free_bytes
    assert free > 0 and zone.check() == []
    assert "raw" in zone and isinstance(zone.objects()[0], ObjectInfo)

    # locks and friends, found by name
    lock: Lock = zone.lock("l")
    with lock:
        died: bool = lock.owner_died
        assert not died
    got: bool = lock.acquire(timeout=0.5)
    assert got
    lock.release()
    lst: LockStats = lock.statistics()
    assert lst.acquisitions >= 2
    rlock: RLock = shmkit.RLock("rl", zone=zone)
    with rlock, rlock:
        pass
    ev: Event = zone.event("e")
    ev.set()
    assert ev.wait(timeout=0.1)
    c: Counter = zone.counter("n", 5)
    new: int = c.add(2)
    assert new == 7 and int(c) == 7 and c.compare_and_swap(7, 8)
    sem = zone.semaphore("s", 2)
    assert sem.acquire(timeout=1.0)
    sem.release()
    v = zone.value("v", "i", 3)
    with v.get_lock():
        v.value += 1
    arr = zone.array("a", "d", [1.0, 2.0])
    assert arr[1] == 2.0 and arr.tolist() == [1.0, 2.0]

    # queue: bytes and objects
    q: Queue = zone.queue("q", 1 << 16)
    q.put(b"payload")
    q.put_many([b"a", b"b"])
    first: bytes = q.get(timeout=1.0)
    rest: list[bytes] = q.get_many(10)
    assert first == b"payload" and rest == [b"a", b"b"]
    try:
        q.get_nowait()
    except queue.Empty:
        pass
    qst: QueueStats = q.statistics()
    assert qst.puts == 3
    objects: Queue = shmkit.Queue("objs", zone=zone, mode="objects")
    objects.put({"any": ["picklable", 1]})
    assert objects.get(timeout=1.0) == {"any": ["picklable", 1]}
    try:
        objects.get(block=False)
    except QueueEmpty:
        pass

    # dict: the OpenResty surface and MutableMapping
    d: Dict = zone.dict("d", 1 << 16)
    d["k"] = b"v"
    evicted: int = d.set("n", 1, ttl=60)
    assert evicted == 0
    total = d.incr("hits", 1, init=0)
    assert total == 1
    keys: list[str | bytes] = d.keys(0)
    live: KeysView[str | bytes] = d.keys()
    assert sorted(map(str, keys)) == sorted(map(str, live))
    dst: DictStats = d.statistics()
    assert dst.items == 3

    # board, config, arrays
    board: Board = zone.board("b", 4096)
    version: int = board.publish({"x": 1})
    value, seen = board.read()
    assert seen == version and value == {"x": 1}
    bst: BoardStats = board.statistics()
    assert bst.version == version
    cfg: SharedConfig = zone.config("cfg", 4096)
    cfg.publish({"workers": 4})
    assert cfg["workers"] == 4
    grid: SharedNDArray = zone.ndarray("grid", (4, 4), "float32")
    grid[:] = 1.5
    assert float(np.sum(grid)) == 24.0 and grid.shm_name == "grid"

    # errors are classes users can catch
    try:
        zone.find("nothing here")
    except ShmkitError as err:
        assert isinstance(err, LookupError)

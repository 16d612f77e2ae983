"""Latest-value boards: 1080p camera frames, and reading an unchanged value.

board_1080p: a writer process publishes 1920x1080x3 uint8 frames as fast as it can (each
frame is stamped with its number in its first 8 bytes); a reader process follows, always
taking the newest frame, until it has the last one.  The figure: frames the reader
obtained per second.  With a board the writer never waits, so the reader may skip
frames; with a queue every frame is delivered.  The lock-based anchors depend on lock
fairness: a writer that takes the lock again at once can starve the reader for a whole
run, hence their wide min–max.

board_read_unchanged: a reader asks for the latest value n times while nothing changes;
nanoseconds per call.
"""

from __future__ import annotations

import struct
import time

from .. import harness as h
from ..harness import ANCHOR, SHMKIT, Case, Metric, Role, Scenario
from ._common import attach_shared_memory, create_shared_memory

SHAPE = (1080, 1920, 3)
FRAME_BYTES = 1080 * 1920 * 3
HEADER = 64          # SharedMemory anchor: [0:8] version (= number of the frame inside)
TIMEOUT = 60.0


def _frame(np):
    f = np.zeros(SHAPE, dtype=np.uint8)
    f[..., 1] = 128
    return f


def _stamp(frame, number: int) -> None:
    frame.reshape(-1)[:8] = memoryview(struct.pack("<q", number)).cast("B")


def _number(frame) -> int:
    flat = frame.reshape(-1) if hasattr(frame, "reshape") else memoryview(frame).cast("B")
    return struct.unpack("<q", bytes(flat[:8]))[0]


# -- SharedMemory + multiprocessing.Lock -------------------------------------------------------

# Two ways users write it.  "polls": the reader spins on the version without the lock and
# copies under it (quick to react, but burns a CPU the writer may need on a small
# machine).  "Condition": a Condition over the multiprocessing.Lock; the writer notifies,
# the reader sleeps until the version moves, then copies under the lock.

def _shm_views(np, name):
    shm = attach_shared_memory(name)
    views = {"version": np.ndarray((1,), dtype=np.int64, buffer=shm.buf[:8]),
             "frame": np.ndarray(SHAPE, dtype=np.uint8, buffer=shm.buf[HEADER:HEADER + FRAME_BYTES])}
    return shm, views


def shm_writer(ctl, name, lock, notify):
    import numpy as np

    shm, v = _shm_views(np, name)
    version, dest = v["version"], v["frame"]
    frame, number = _frame(np), 0
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            number += 1
            _stamp(frame, number)
            with lock:
                dest[...] = frame
                version[0] = number
                if notify:
                    lock.notify_all()
        ctl.report(t0=t0)
    del version, dest
    v.clear()
    shm.close()


def shm_reader(ctl, name, lock, notify):
    import numpy as np

    shm, v = _shm_views(np, name)
    mine = np.empty(SHAPE, dtype=np.uint8)
    state = {"last": 0}

    def moved():
        return v["version"][0] != state["last"]

    for n in ctl.reps():
        target, seen = state["last"] + n, 0
        deadline = time.monotonic() + TIMEOUT
        while state["last"] < target:
            if not notify:
                while not moved():
                    if time.monotonic() > deadline:
                        raise h.CaseFailed(f"reader saw no new frame for {TIMEOUT:.0f} s")
            with lock:
                if notify and not lock.wait_for(moved, TIMEOUT):
                    raise h.CaseFailed(f"reader saw no new frame for {TIMEOUT:.0f} s")
                mine[...] = v["frame"]
                state["last"] = int(v["version"][0])
            if _number(mine) != state["last"]:
                raise h.CaseFailed(f"torn frame: stamped {_number(mine)}, version {state['last']}")
            seen += 1
        ctl.report(t1=time.perf_counter(), seen=seen)
    v.clear()
    shm.close()


# -- multiprocessing.Queue of frames ------------------------------------------------------------

def queue_writer(ctl, q):
    import numpy as np

    frame, number = _frame(np), 0
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            number += 1
            _stamp(frame, number)
            q.put(frame)
        ctl.report(t0=t0)


def queue_reader(ctl, q):
    last = 0
    for n in ctl.reps():
        target, seen = last + n, 0
        while last < target:
            f = q.get(timeout=TIMEOUT)
            last = _number(f)
            seen += 1
        ctl.report(t1=time.perf_counter(), seen=seen)


# -- shmkit.Board -------------------------------------------------------------------------------

def board_writer(ctl, board):
    import numpy as np

    frame, number = _frame(np), 0
    publish = board.publish
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            number += 1
            _stamp(frame, number)
            publish(frame)
        ctl.report(t0=t0)


def board_reader(ctl, board, copy):
    last_number, version = 0, 0
    wait_newer = board.wait_newer
    for n in ctl.reps():
        target, seen = last_number + n, 0
        while last_number < target:
            value, version = wait_newer(version, TIMEOUT, copy=copy)
            last_number = _number(value)
            seen += 1
            del value       # a zero-copy view is valid until the next read
        ctl.report(t1=time.perf_counter(), seen=seen)


def compute_frames(n, reports):
    # (how fast put() returns is no figure: a queue buffers frames its reader has not
    # taken yet; what counts is what reaches the reader)
    writer, reader = reports
    return {"read": reader["seen"] / max(reader["t1"] - writer["t0"], 1e-12)}


def frame_cases(opts):
    def numpy_needed():
        h.need_module("numpy")

    def shm_lock(notify):
        def setup(env):
            numpy_needed()
            shm = create_shared_memory(HEADER + FRAME_BYTES)

            def drop():
                shm.close()
                shm.unlink()

            env.defer(drop)
            lock = env.ctx.Condition(env.ctx.Lock()) if notify else env.ctx.Lock()
            return [Role(shm_writer, (shm.name, lock, notify)), Role(shm_reader, (shm.name, lock, notify))]
        return setup

    def mp_queue(env):
        numpy_needed()
        q = env.ctx.Queue(maxsize=4)
        return [Role(queue_writer, (q,)), Role(queue_reader, (q,))]

    def board(copy):
        def setup(env):
            numpy_needed()
            Board = h.need_shmkit("Board", "publish", "read", "wait_newer")
            zone = env.zone(8 * FRAME_BYTES + (16 << 20))
            b = h.shmkit_call("shmkit.Board(name, max_bytes, zone=...)", Board, env.unique("board"),
                              FRAME_BYTES + 4096, zone=zone)
            return [Role(board_writer, (b,)), Role(board_reader, (b, copy))]
        return setup

    return [
        Case("SharedMemory + multiprocessing.Lock, reader polls", ANCHOR, shm_lock(False), compute_frames,
             4, 100_000, note="spins on the version, copies under the lock"),
        Case("SharedMemory + multiprocessing.Lock + Condition", ANCHOR, shm_lock(True), compute_frames,
             4, 100_000, note="sleeps until notified, copies under the lock"),
        Case("multiprocessing.Queue of frames", ANCHOR, mp_queue, compute_frames, 4, 100_000,
             note="maxsize=4: every frame delivered"),
        Case("shmkit.Board (copy)", SHMKIT, board(True), compute_frames, 4, 100_000,
             note="reader: wait_newer(), a private copy of each frame"),
        Case("shmkit.Board (zero-copy view)", SHMKIT, board(False), compute_frames, 4, 100_000,
             note="reader: wait_newer(copy=False), a view that cannot tear"),
    ]


# -- reading an unchanged value -------------------------------------------------------------------

def shm_unchanged_reader(ctl, name, lock):
    import numpy as np

    shm = attach_shared_memory(name)
    views = [np.ndarray((1,), dtype=np.int64, buffer=shm.buf[:8])]
    state = [-1, None]            # version seen, the value kept for it

    def read_latest():
        # what a user writes: check the version under the lock, reuse the copy if unchanged
        with lock:
            v = int(views[0][0])
            if v != state[0]:
                state[0], state[1] = v, bytes(shm.buf[HEADER:HEADER + 64])
        return state[1], v

    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            read_latest()
        ctl.report(t0=t0, t1=time.perf_counter())
    views.clear()                 # no export of shm.buf may outlive close()
    shm.close()


def board_unchanged_reader(ctl, board):
    read = board.read
    for n in ctl.reps():
        t0 = time.perf_counter()
        for _ in range(n):
            read()
        ctl.report(t0=t0, t1=time.perf_counter())


def compute_unchanged(n, reports):
    return {"read": h.span(reports) / n * 1e9}


def unchanged_cases(opts):
    def shm_lock(env):
        h.need_module("numpy")
        shm = create_shared_memory(HEADER + 64)
        shm.buf[:8] = struct.pack("<q", 1)

        def drop():
            shm.close()
            shm.unlink()

        env.defer(drop)
        return [Role(shm_unchanged_reader, (shm.name, env.ctx.Lock()))]

    def board(env):
        Board = h.need_shmkit("Board", "publish", "read")
        zone = env.zone(4 << 20)
        b = h.shmkit_call("shmkit.Board(name, max_bytes, zone=...)", Board, env.unique("board"), 4096, zone=zone)
        b.publish(b"x" * 64)   # the parent is the writer; it publishes once
        return [Role(board_unchanged_reader, (b,))]

    return [
        Case("SharedMemory + multiprocessing.Lock", ANCHOR, shm_lock, compute_unchanged, 10_000, 100_000_000,
             note="lock, compare the version, return the cached copy"),
        Case("shmkit.Board.read()", SHMKIT, board, compute_unchanged, 10_000, 100_000_000,
             note="64 B value"),
    ]


def scenarios():
    return [
        Scenario(
            name="board_1080p",
            group="board",
            title="1080p frames (1920x1080x3 uint8): publish + read rate",
            description=("A writer process publishes 6.2 MB frames as fast as it can; a reader "
                         "process keeps taking the newest complete frame (a private copy, or a "
                         "zero-copy view that cannot tear). Frames the reader obtained per second."),
            metrics=[Metric("read", "frames/s")],
            cases=frame_cases,
            needs=("numpy",),
        ),
        Scenario(
            name="board_read_unchanged",
            group="board",
            title="read() of the latest value when nothing changed",
            description="A reader process asks for the latest value in a loop while nothing changes; time per call.",
            metrics=[Metric("read", "ns", higher_is_better=False)],
            cases=unchanged_cases,
            bar=h.bar_at_least(1000, "well under 1 µs plus the Python call"),
        ),
    ]

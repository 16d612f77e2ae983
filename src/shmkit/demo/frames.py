"""Act 2 of ``shmkit demo``: the camera-frames pipeline.

A producer (this process) publishes 1920x1080x3 uint8 frames through a Board, building
each one in place with ``board.loan()``; consumer processes (spawned) take the newest
frame zero-copy with ``wait_newer(..., copy=False)``, check that it is the frame it
claims to be, compute a small statistic, and report frames per second and latency (from
the producer's timestamp inside the frame to the moment the consumer holds it).
examples/camera_frames.py is the same pipeline as a standalone program.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import struct
import sys
import time
import uuid
from typing import IO, Any

from ..zone import Zone

HEIGHT, WIDTH = 1080, 1920
SHAPE = (HEIGHT, WIDTH, 3)
FRAME_BYTES = HEIGHT * WIDTH * 3
STAMP = struct.Struct("<QQ")  # frame number, CLOCK_REALTIME ns: the first 16 bytes


def _test_pattern(np: Any, k: int) -> Any:
    """Frame k of a small set of prepared images: a moving gradient with a colour that
    encodes k in its last pixel, so consumers can tell a frame from a mixture."""
    y = np.arange(HEIGHT, dtype=np.uint16)[:, None]
    x = np.arange(WIDTH, dtype=np.uint16)[None, :]
    img = np.empty(SHAPE, np.uint8)
    img[..., 0] = (x + 8 * k) & 0xFF
    img[..., 1] = (y + 4 * k) & 0xFF
    img[..., 2] = ((x + y) // 8 + k) & 0xFF
    img[-1, -1] = k
    return img


def consumer(zone: Zone, name: str, index: int, results: Any) -> None:
    import numpy as np

    from ..board import Board

    board = Board(name, zone=zone)
    results.put(("ready", index))
    frames = bad = 0
    latencies: list[float] = []
    checksum = 0
    version = 0
    t_first: float | None = None
    t_last = 0.0
    while True:
        frame, version = board.wait_newer(version, timeout=30, copy=False)
        now = time.time_ns()
        if not isinstance(frame, np.ndarray):  # the producer's end marker
            break
        number, sent_ns = STAMP.unpack(frame[0, :6].tobytes()[:16])
        latencies.append((now - sent_ns) / 1e6)
        if frame.shape != SHAPE or frame[-1, -1, 0] != number % 8:
            bad += 1
        checksum += int(frame[::64, ::64, 1].sum())  # "process" the frame a little
        frames += 1
        t_first = t_first or time.monotonic()
        t_last = time.monotonic()
    board.close()
    latencies.sort()
    span = (t_last - t_first) if frames > 1 and t_first is not None else 0.0
    results.put(("done", index, {
        "frames": frames,
        "bad": bad,
        "fps": (frames - 1) / span if span > 0 else 0.0,
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_p99": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "checksum": checksum,
    }))


def run(duration: float = 5.0, *, consumers: int = 3, fps: float = 60.0,
        out: IO[str] | None = None) -> dict[str, Any]:
    """A producer publishes 1920x1080x3 uint8 frames through a Board at ``fps`` (0: as
    fast as it can) for ``duration`` seconds while ``consumers`` spawned processes take the
    newest frame zero-copy, verify it and report their frame rate and latency.  Prints a
    table to ``out`` (default stdout); returns the figures."""
    import numpy as np

    from ..board import Board

    out = out or sys.stdout
    buffers = consumers + 2  # each zero-copy consumer may hold one frame
    zone_name = f"shmkit-demo-frames-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    zone = Zone(zone_name, buffers * (FRAME_BYTES + 4096) + (4 << 20))
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    try:
        board = Board("camera", FRAME_BYTES + 4096, zone=zone, buffers=buffers, writer=True)
        patterns = [_test_pattern(np, k) for k in range(8)]
        results = ctx.Queue()
        for i in range(consumers):
            p = ctx.Process(target=consumer, args=(zone, "camera", i, results), daemon=True)
            p.start()
            procs.append(p)
        for _ in range(consumers):
            results.get(timeout=60)
        print(f"camera: {WIDTH}x{HEIGHT}x3 uint8 frames ({FRAME_BYTES / 1e6:.1f} MB) at "
              f"{'max' if not fps else fps} fps to {consumers} consumers for {duration} s",
              file=out)
        period = 1.0 / fps if fps else 0.0
        n = 0
        t0 = time.monotonic()
        next_t = t0
        while time.monotonic() - t0 < duration:
            with board.loan(SHAPE, np.uint8) as frame:  # built in shared memory: no copy
                np.copyto(frame, patterns[n % 8])
                stamp = np.frombuffer(STAMP.pack(n, time.time_ns()), np.uint8)
                frame.reshape(-1)[:16] = stamp
            n += 1
            if period:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing like a camera, not waiting for anyone
        elapsed = time.monotonic() - t0
        board.publish(b"end")
        reports = {}
        for _ in range(consumers):
            msg = results.get(timeout=60)
            reports[msg[1]] = msg[2]
        for p in procs:
            p.join(timeout=30)
        print(f"producer: {n} frames in {elapsed:.2f} s = {n / elapsed:.1f} fps", file=out)
        for i in range(consumers):
            r = reports[i]
            print(f"consumer {i}: {r['frames']} frames, {r['fps']:.1f} fps, latency p50 "
                  f"{r['latency_ms_p50']:.2f} ms p99 {r['latency_ms_p99']:.2f} ms, "
                  f"{r['bad']} bad", file=out)
        board.close()
        return {"published": n, "fps": n / elapsed,
                "consumers": [reports[i] for i in range(consumers)]}
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        zone.close()
        zone.unlink()

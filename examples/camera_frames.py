"""Camera frames through a shmkit Board: one producer, several consumers, zero copies.

    python examples/camera_frames.py [--fps 60] [--consumers 3] [--seconds 3] [--show]

The producer stands for a camera driver: it fills 1920x1080x3 uint8 frames at a video
rate (or as fast as it can with --fps 0) *directly in shared memory* with board.loan(),
stamping each with its number and the time.  Each consumer is a separate process that
always works on the newest frame -- a slow consumer skips frames instead of falling
behind -- through a zero-copy, read-only view, and reports its frame rate and the
latency from the stamp to the moment it holds the frame.  --show displays consumer 0's
frames with OpenCV if it is installed.

What the Board guarantees here: the producer never waits for a consumer; a consumer
never sees a half-written frame; a frame it holds is not overwritten until it asks for
the next one (each zero-copy consumer needs one buffer: buffers = consumers + 2).  If the
producer dies, the consumers keep the last frame and a new producer can take over.

Each consumer checks every frame it gets against the number stamped in it (the colour
of every 16th pixel must be that frame's, and numbers only go forward), before and after
"processing" it.  Exits 0 only if every consumer got frames, none torn or out of order,
and the end of the stream.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import struct
import sys
import time
from typing import Any

import numpy as np

import shmkit

SHAPE = (1080, 1920, 3)
STAMP = struct.Struct("<QQ")  # frame number, time.time_ns() when it was produced


def produce(board: shmkit.Board, fps: float, seconds: float) -> int:
    """The 'camera': a moving colour gradient, built in place in shared memory."""
    y = np.arange(SHAPE[0], dtype=np.uint16)[:, None]
    x = np.arange(SHAPE[1], dtype=np.uint16)[None, :]
    period = 1.0 / fps if fps else 0.0
    n = 0
    start = next_frame = time.monotonic()
    while time.monotonic() - start < seconds:
        with board.loan(SHAPE, np.uint8) as frame:      # a free buffer of the board
            frame[..., 0] = (x + 4 * n) & 0xFF
            frame[..., 1] = (y + 2 * n) & 0xFF
            frame[..., 2] = n & 0xFF
            frame.reshape(-1)[:STAMP.size] = np.frombuffer(
                STAMP.pack(n, time.time_ns()), np.uint8)
        n += 1                                           # published when the block ended
        if period:
            next_frame += period
            time.sleep(max(0.0, next_frame - time.monotonic()))
    board.publish(b"end of stream")
    return n


def consume(zone: shmkit.Zone, index: int, show: bool, results: Any) -> None:
    board = shmkit.Board("camera", zone=zone)            # attach by name
    cv2: Any = None
    if show:
        try:
            cv2 = importlib.import_module("cv2")
        except ImportError:
            print("--show needs OpenCV (pip install shmkit[images]); not showing")
    results.put(("ready", index))
    frames, latencies, version, t0 = 0, [], 0, None
    bad, last, brightness = 0, -1, 0.0
    while True:
        frame, version = board.wait_newer(version, timeout=30, copy=False)  # zero-copy
        received = time.time_ns()
        if not isinstance(frame, np.ndarray):
            break                                        # end of stream
        number, produced = STAMP.unpack(frame.reshape(-1)[:STAMP.size].tobytes())
        latencies.append((received - produced) / 1e6)
        whole = bool((frame[1::16, ::16, 2] == (number & 0xFF)).all())  # not torn...
        brightness = frame[::16, ::16].mean()            # "process" the frame
        whole = whole and bool((frame[1::16, ::16, 2] == (number & 0xFF)).all())  # ...or reused
        bad += not whole or number < last
        last = number
        if cv2 is not None and index == 0:
            cv2.imshow("shmkit camera", frame)
            cv2.waitKey(1)
        frames += 1
        t0 = t0 or time.monotonic()
    elapsed = time.monotonic() - t0 if t0 else 0.0
    latencies.sort()
    if not latencies:
        latencies = [0.0]
    results.put(("done", index, frames, frames / elapsed if elapsed else 0.0,
                 latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
                 float(brightness), bad))
    board.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--fps", type=float, default=60.0, help="0: as fast as possible")
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--show", action="store_true", help="display frames (needs OpenCV)")
    args = ap.parse_args()

    frame_bytes = int(np.prod(SHAPE)) + 4096             # room for the array's head
    buffers = args.consumers + 2
    zone = shmkit.Zone(f"camera-example-{os.getpid()}", buffers * frame_bytes + (4 << 20))
    ctx = mp.get_context("spawn")
    consumers = []
    problems = []
    try:
        board = zone.board("camera", frame_bytes, buffers=buffers, writer=True)
        results = ctx.Queue()
        for i in range(args.consumers):
            p = ctx.Process(target=consume, args=(zone, i, args.show, results))
            p.start()
            consumers.append(p)
        for _ in consumers:
            results.get(timeout=60)                      # every consumer is attached
        produced = produce(board, args.fps, args.seconds)
        print(f"producer: {produced} frames in {args.seconds} s "
              f"({produced / args.seconds:.1f} fps)")
        for _ in consumers:
            _, i, frames, fps, p50, p99, _, bad = results.get(timeout=60)
            print(f"consumer {i}: {frames} frames, {fps:.1f} fps, "
                  f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, {bad} torn or out of order")
            if frames == 0 or bad:
                problems.append(f"consumer {i}: {frames} frames, {bad} bad")
        for p in consumers:
            p.join(timeout=30)
            if p.exitcode != 0:
                problems.append(f"consumer {p.pid} exited with {p.exitcode}")
        st = board.statistics()
        print(f"board: version {st.version}, {st.buffers} buffers, "
              f"{st.pinned_skips} pinned buffers skipped by the producer")
        if st.version != produced + 1:
            problems.append(f"{produced} frames and an end mark, but version {st.version}")
        board.close()
    finally:
        for p in consumers:
            if p.is_alive():
                p.kill()
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: {args.consumers} consumers each got whole frames, newest first, in order, "
          "straight from shared memory, and the end of the stream")


if __name__ == "__main__":
    main()

"""A pipeline across processes with shmkit.Queue: one producer hands NumPy frames to
workers zero-copy (reserve/commit), workers send small results back in objects mode.

    python examples/queue_pipeline.py

Exits 0 only if every frame came back exactly once with the right content.
"""

import multiprocessing as mp
import os
import sys
import time

import numpy as np

import shmkit

FRAME = (480, 640, 3)


def worker(frames: shmkit.Queue, results: shmkit.Queue) -> None:
    while True:
        try:
            view = frames.get(timeout=5)
        except shmkit.ClosedError:
            return
        frame = np.frombuffer(view, dtype=np.uint8).reshape(FRAME)  # no copy
        results.put((int(frame[0, 0, 0]), float(frame.mean())))
        del frame, view  # the block goes back to the zone


def main(n: int = 200, workers: int = 2) -> None:
    zone = shmkit.Zone(f"pipeline-{os.getpid()}", 64 << 20)
    try:
        frames = zone.queue("frames", 1 << 16)
        results = zone.queue("results", mode="objects")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(frames, results)) for _ in range(workers)]
        for p in procs:
            p.start()
        t = time.perf_counter()
        for i in range(n):
            r = frames.reserve(int(np.prod(FRAME)))
            img = np.ndarray(FRAME, np.uint8, buffer=memoryview(r))
            img[:] = i % 256  # "capture" straight into shared memory
            del img
            r.commit()
        got = [results.get(timeout=30) for _ in range(n)]
        secs = time.perf_counter() - t
        frames.close()
        for p in procs:
            p.join(10)
        st = frames.statistics()
        print(f"{n} frames of {np.prod(FRAME) / 1e6:.1f} MB through {workers} workers in "
              f"{secs:.2f} s; results for {len(got)} frames; {st}")
        problems = []
        if sorted(v for v, _ in got) != sorted(i % 256 for i in range(n)):
            problems.append("a frame was lost or seen twice")
        if any(mean != v for v, mean in got):
            problems.append("a frame's pixels did not match its value")
        if st.puts != n or st.gets != n or st.drops or any(p.exitcode for p in procs):
            problems.append(f"the queue's counts are off, or a worker failed: {st}")
    finally:
        zone.close()
        zone.unlink()
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: {n} frames went to the workers without a copy and each came back once, "
          "with the right content")


if __name__ == "__main__":
    main()

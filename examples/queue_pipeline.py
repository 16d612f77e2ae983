"""A pipeline across processes with shmkit.Queue: one producer hands NumPy frames to
workers zero-copy (reserve/commit), workers send small results back in objects mode.

    python examples/queue_pipeline.py
"""

import multiprocessing as mp
import os
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
        got = sorted(results.get(timeout=30)[0] for _ in range(n))
        secs = time.perf_counter() - t
        frames.close()
        for p in procs:
            p.join(10)
        print(f"{n} frames of {np.prod(FRAME) / 1e6:.1f} MB through {workers} workers in "
              f"{secs:.2f} s; results for {len(got)} frames; {frames.statistics()}")
    finally:
        zone.close()
        zone.unlink()


if __name__ == "__main__":
    main()

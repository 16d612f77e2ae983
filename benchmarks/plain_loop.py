"""The figure a user sees: a plain loop in user code, one producer process putting 64 B
messages, one consumer process getting them (both bound to locals), no harness.

Each run starts both processes (spawn), moves --n messages and reports messages per
second from the producer's first put to the consumer's last get, and how often the
consumer found the queue empty (a get that had to wait: the two ran in lockstep).
--runs runs make one median; --rounds medians give the spread (docs/queue.md,
"Lockstep").  --delivery and --task-done measure the task accounting too, and
--compare PATH alternates this build with the shmkit package found under PATH (e.g. a
build of main) in one invocation:

    python benchmarks/plain_loop.py --rounds 5 --runs 5
    python benchmarks/plain_loop.py --task-done --delivery at-least-once
    python benchmarks/plain_loop.py --compare /tmp/main/src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys, time, json, multiprocessing as mp
import shmkit

def producer(zone, name, n, go):
    q = shmkit.Queue(name, zone=zone)
    msg = b"x" * 64
    put = q.put
    go.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        put(msg)
    return t0

def consumer(zone, name, n, task_done, go, out):
    q = shmkit.Queue(name, zone=zone)
    get = q.get
    go.wait()
    if task_done:
        done = q.task_done
        for _ in range(n):
            get()
            done()
    else:
        for _ in range(n):
            get()
    out.put((time.perf_counter(), q.statistics().waits))

def run_producer(zone, name, n, go, out):
    out.put(producer(zone, name, n, go))

if __name__ == "__main__":
    n, delivery, task_done = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    ctx = mp.get_context("spawn")
    zone = shmkit.Zone(f"shmkit-plain-{os.getpid()}", 16 << 20)
    try:
        kw = {} if delivery == "none" else {"delivery": delivery}
        shmkit.Queue("q", 1 << 20, zone=zone, **kw)
        go, pout, cout = ctx.Event(), ctx.Queue(), ctx.Queue()
        c = ctx.Process(target=consumer, args=(zone, "q", n, task_done, go, cout))
        p = ctx.Process(target=run_producer, args=(zone, "q", n, go, pout))
        c.start(); p.start()
        time.sleep(0.3)
        go.set()
        t0 = pout.get(timeout=300)
        t1, waits = cout.get(timeout=300)
        p.join(); c.join()
        print(json.dumps({"rate": n / (t1 - t0), "waits": waits}))
    finally:
        zone.close()
        zone.unlink()
"""


def one_run(pythonpath: str | None, n: int, delivery: str, task_done: bool) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # a file, not -c: spawned children import their functions from __main__'s file
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="shmkit_plain_loop_",
                                     delete=False) as f:
        f.write(CHILD)
    try:
        r = subprocess.run([sys.executable, f.name, str(n), delivery, "1" if task_done else "0"],
                           capture_output=True, text=True, env=env, timeout=900)
    finally:
        os.unlink(f.name)
    if r.returncode:
        raise SystemExit(f"run failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="messages per run")
    ap.add_argument("--runs", type=int, default=5, help="runs per median")
    ap.add_argument("--rounds", type=int, default=3, help="medians (the spread)")
    ap.add_argument("--delivery", default="none",
                    help="at-most-once / at-least-once (default: the queue's default, "
                         "and the only choice a build without delivery modes has)")
    ap.add_argument("--task-done", action="store_true", help="the consumer calls task_done()")
    ap.add_argument("--compare", metavar="PATH",
                    help="also run the shmkit under PATH (PYTHONPATH), alternating")
    a = ap.parse_args()
    builds = [("this build", None)] + ([("compare", a.compare)] if a.compare else [])
    medians: dict[str, list[float]] = {b: [] for b, _ in builds}
    print(f"plain loop, 64 B, {a.n} messages per run, {a.runs} runs per median, "
          f"delivery={a.delivery}, task_done={a.task_done}, load {os.getloadavg()[0]:.2f}")
    for rnd in range(a.rounds):
        rates: dict[str, list[float]] = {b: [] for b, _ in builds}
        waits: dict[str, list[int]] = {b: [] for b, _ in builds}
        for _ in range(a.runs):
            for label, path in builds:          # alternating, run by run
                r = one_run(path, a.n, a.delivery, a.task_done)
                rates[label].append(r["rate"])
                waits[label].append(r["waits"])
        for label, _ in builds:
            med = statistics.median(rates[label])
            medians[label].append(med)
            print(f"  round {rnd + 1} {label:10s} median {med / 1e6:6.2f} M msg/s  "
                  f"(min {min(rates[label]) / 1e6:.2f}, max {max(rates[label]) / 1e6:.2f}; "
                  f"consumer sleeps per run: {statistics.median(waits[label]):.0f})")
    for label, _ in builds:
        m = medians[label]
        print(f"{label}: medians {', '.join(f'{x / 1e6:.2f}' for x in m)} M msg/s; "
              f"spread {min(m) / 1e6:.2f}-{max(m) / 1e6:.2f}")
    time.sleep(0)


if __name__ == "__main__":
    main()

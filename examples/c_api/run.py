"""A C program in a Python worker pool, through shmkit's C API (shmkit.h, libshmkit.so).

    python examples/c_api/run.py

Builds orders.c with the line docs/c.md gives (``cc -o orders orders.c $(shmkit config
--cflags --libs)``), declares a zone, starts two Python workers (spawn), then runs the C
program, which attaches to the same zone by name and:

1. puts 20,000 orders on the queue "orders" (C -> Python);
2. takes the workers' 20,000 answers from the queue "answers" (Python -> C) and checks
   that every order was answered exactly once with the right price;
3. reads the totals the workers kept in the dict "totals" with atomic ``incr`` from two
   processes (exact: no lost update);
4. writes its line in the dict under the lock "ledger", as the workers do.

Python then checks the same totals and the ledger from its side.  Exits 0 only if every
check held on both sides; the zone is removed at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

import shmkit

HERE = os.path.dirname(os.path.abspath(__file__))
N = 20_000
WORKERS = 2


def build(workdir: str) -> str:
    """orders.c, built with the documented command (run by a shell, as a user would)."""
    exe = os.path.join(workdir, "orders")
    cmd = f"cc -o {exe} {os.path.join(HERE, 'orders.c')} $(shmkit config --cflags --libs)"
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"FAILED: could not build orders.c:\n{cmd}\n{r.stderr}")
    print(f"built orders.c: {cmd.replace(workdir + '/', '')}")
    return exe


def worker(zone_name: str) -> None:
    """Price orders until the "stop" order; keep the totals; sign the ledger."""
    zone = shmkit.Zone(zone_name)
    orders, answers = zone.queue("orders"), zone.queue("answers")
    totals, ledger = zone.dict("totals"), zone.lock("ledger")
    zone.counter("ready").add(1)
    done = 0
    while True:
        msg = orders.get(timeout=60)
        if msg == b"stop":
            break
        oid, qty, unit = map(int, msg.split())
        price = qty * unit
        totals.incr(b"cents", price, 0)        # atomic across processes (C reads it)
        totals.incr(b"orders", 1, 0)
        answers.put(b"%d %d %d" % (oid, price, os.getpid()), timeout=60)
        done += 1
    with ledger:
        totals[b"ledger:%d" % os.getpid()] = b"priced %d orders" % done
    zone.close()


def main() -> int:
    if not shutil.which("cc"):
        print("FAILED: this example needs a C compiler (apt-get install gcc)", file=sys.stderr)
        return 1
    name = f"shmkit-example-c-api-{os.getpid()}"
    zone = shmkit.Zone(name, 16 << 20, tag="c-api-example")
    workers = []
    try:
        for q in ("orders", "answers"):
            zone.queue(q, 256 << 10)
        totals = zone.dict("totals", 1 << 20)
        with tempfile.TemporaryDirectory(prefix="shmkit-c-api-") as workdir:
            exe = build(workdir)
            ctx = mp.get_context("spawn")
            workers = [ctx.Process(target=worker, args=(name,)) for _ in range(WORKERS)]
            for w in workers:
                w.start()
            ready, deadline = zone.counter("ready"), time.monotonic() + 60
            while ready.get() < WORKERS and time.monotonic() < deadline:
                time.sleep(0.01)     # the workers are starting (spawn: a fresh interpreter)
            c = subprocess.run([exe, name, str(N)], capture_output=True, text=True, timeout=120)
            sys.stdout.write(c.stdout)
            sys.stderr.write(c.stderr)
        orders = zone.queue("orders")
        for _ in workers:
            orders.put(b"stop")
        for w in workers:
            w.join(60)
        expected = sum((1 + i % 7) * (100 + (i * 7919) % 900) for i in range(N))
        checks = {
            "the C program checked every answer and the totals": c.returncode == 0,
            "the workers finished": all(w.exitcode == 0 for w in workers),
            "Python sees the same totals": totals.get(b"cents") == expected
            and totals.get(b"orders") == N,
            "the C program's line is in the ledger": totals.get(b"ledger:c") == b"C checked %d orders" % N,
            "each worker's line is in the ledger": all(
                totals.get(b"ledger:%d" % (w.pid or 0), b"").startswith(b"priced ") for w in workers),
            "both queues are empty": zone.queue("orders").qsize() == 0
            and zone.queue("answers").qsize() == 0,
        }
        for what, ok in checks.items():
            print(f"{'ok ' if ok else 'BAD'} {what}")
        if not all(checks.values()):
            print("FAILED: the C program and the Python workers disagree", file=sys.stderr)
            return 1
        print(f"OK: a C program and {WORKERS} Python workers shared one zone: {N} orders out "
              f"and {N} answers back through two queues, totals of {expected} cents kept "
              "exactly by incr from both sides, a ledger written under one lock")
        return 0
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join(10)
        zone.close()
        zone.unlink()


if __name__ == "__main__":
    sys.exit(main())

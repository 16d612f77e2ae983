"""Does serving the status page slow down the processes that use the zones?

Queue throughput, 1 producer process -> 1 consumer process (spawned), 64 B messages,
in a zone that `shmkit serve` shows, measured alternately

  - "quiet": the server runs but nobody asks it anything;
  - "page":  a client reads /status.json every 100 ms, as the page does at --refresh 0.1
             (the server reads the zone's header, allocator and every object's statistics
             each time: nothing waits for the zone mutex it takes for microseconds, and
             queue statistics are plain loads);
  - "browser" (--browser): the real page in headless Chromium at --refresh 0.1 (on two
             CPUs this mostly measures Chromium's own CPU use, not the server's).

Repetitions of the conditions are interleaved, in an order that rotates, so that the
load of the machine affects them alike; each figure is the median of --reps runs, min
and max printed too.

    python benchmarks/micro_serve.py [--reps 5] [--messages 3000000] [--browser]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import shmkit

CTX = mp.get_context("spawn")
SIZE = 64


def producer(zone_name, n, barrier):
    z = shmkit.Zone(zone_name)
    q = z.queue("jobs")
    msg = bytes(SIZE)
    put = q.put
    barrier.wait()
    for _ in range(n):
        put(msg)


def consumer(zone_name, n, barrier, out):
    z = shmkit.Zone(zone_name)
    q = z.queue("jobs")
    get = q.get
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        get()
    out.put(n / (time.perf_counter() - t0))


def one_run(zone_name, n) -> float:
    barrier = CTX.Barrier(2)
    out = CTX.Queue()
    ps = [CTX.Process(target=producer, args=(zone_name, n, barrier)),
          CTX.Process(target=consumer, args=(zone_name, n, barrier, out))]
    for p in ps:
        p.start()
    rate = out.get(timeout=300)
    for p in ps:
        p.join(60)
    return rate


class Poller:
    """GET /status.json every `interval` seconds until stopped; counts the answers."""

    def __init__(self, url, interval=0.1):
        self.url, self.interval = url, interval
        self.stop = threading.Event()
        self.count = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        nxt = time.monotonic()
        while not self.stop.is_set():
            t0 = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as r:
                r.read()
            self.seconds += time.perf_counter() - t0
            self.count += 1
            nxt += self.interval
            self.stop.wait(max(0.0, nxt - time.monotonic()))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)


def _hog(stop, busy, period):
    while not stop.is_set():
        t = time.perf_counter() + busy
        while time.perf_counter() < t:
            pass
        stop.wait(period)


class Hog:
    """Control: a process unrelated to shmkit that computes `busy` seconds every
    `period` (as much CPU as the server spends), to tell the page's effect from the
    effect of any periodic activity on this machine."""

    def __init__(self, busy=0.003, period=0.1):
        self.stop = CTX.Event()
        self.proc = CTX.Process(target=_hog, args=(self.stop, busy, period))

    def __enter__(self):
        self.proc.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(15)


class Page:
    """The page itself in headless Chromium (Debian's), refreshing every 100 ms."""

    def __init__(self, url):
        self.url = url

    def __enter__(self):
        from playwright.sync_api import sync_playwright
        self.dir = tempfile.TemporaryDirectory()
        self.pw = sync_playwright().start()
        self.ctx = self.pw.chromium.launch_persistent_context(
            self.dir.name, executable_path="/usr/bin/chromium", headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        page = self.ctx.new_page()
        page.goto(self.url)
        page.locator('tr[data-object="jobs"]').wait_for(timeout=20_000)
        return self

    def __exit__(self, *exc):
        self.ctx.close()
        self.pw.stop()
        self.dir.cleanup()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--messages", type=int, default=3_000_000)
    ap.add_argument("--browser", action="store_true", help="also the page in Chromium")
    ap.add_argument("--controls", action="store_true",
                    help="also: /healthz every 100 ms (HTTP without reading), and a process "
                         "unrelated to shmkit busy 3 ms every 100 ms")
    args = ap.parse_args(argv)
    zone_name = f"shmkit-bench-{os.getpid()}-serve"
    zone = shmkit.Zone(zone_name, 16 << 20)
    zone.queue("jobs", 1 << 20)
    zone.dict("cache", 1 << 20)
    zone.lock("lock")
    zone.counter("n")
    srv = subprocess.Popen([sys.executable, "-m", "shmkit", "serve", "--port", "0", "--quiet",
                            "--refresh", "0.1", "--match", zone_name],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)/", srv.stdout.readline()).group(1))
        url = f"http://127.0.0.1:{port}"
        conditions = {"quiet": None, "page": lambda: Poller(url + "/status.json")}
        if args.browser:
            conditions["browser"] = lambda: Page(url + "/")
        if args.controls:
            conditions["healthz"] = lambda: Poller(url + "/healthz")
            conditions["hog"] = lambda: Hog()
        one_run(zone_name, args.messages // 10)  # warm-up
        results = {c: [] for c in conditions}
        polls = []
        server_cpu, answers = 0.0, 0
        names = list(conditions)
        for rep in range(args.reps):
            # the order rotates each repetition, and each run starts a second after the
            # previous condition ended (a browser takes a while to go away): no condition
            # always follows another
            for cond in names[rep % len(names):] + names[:rep % len(names)]:
                make = conditions[cond]
                time.sleep(1.0)
                if make is None:
                    results[cond].append(one_run(zone_name, args.messages))
                    continue
                cpu0 = cpu_seconds(srv.pid)
                with make() as ctx:
                    results[cond].append(one_run(zone_name, args.messages))
                if cond == "page":
                    polls.append(ctx.seconds / max(1, ctx.count))
                    server_cpu += cpu_seconds(srv.pid) - cpu0
                    answers += ctx.count
        load = os.getloadavg()
        print(f"queue 64 B, 1 -> 1 process, {args.messages:,} messages per run, "
              f"median of {args.reps} (interleaved); load average {load[0]:.2f}")
        base = statistics.median(results["quiet"])
        for cond, rs in results.items():
            med = statistics.median(rs)
            print(f"  {cond:<8} {med / 1e6:6.2f} M msg/s  (min {min(rs) / 1e6:.2f}, "
                  f"max {max(rs) / 1e6:.2f})  ratio to quiet {med / base:.3f}")
        if polls:
            print(f"  one /status.json answer took {1000 * statistics.median(polls):.1f} ms "
                  "(median, as the client saw it)")
            per = server_cpu / max(1, answers)
            print(f"  the server spent {1000 * per:.2f} ms of CPU per answer ({answers} answers):"
                  f" {100 * per / 0.1:.1f}% of one CPU at one answer every 100 ms")
    finally:
        srv.terminate()
        srv.wait(10)
        zone.unlink()
        zone.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

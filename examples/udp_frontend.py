"""A network front-end handing packets to worker processes through a shmkit Queue; the
workers sleep until there is work (no polling) and answer the senders directly.

    python examples/udp_frontend.py

The shape of a DNS or syslog server, or of a packet-processing pipeline: one process
owns the socket and does nothing but receive; the work happens in several processes
that share one queue.

    client --UDP--> front-end --shmkit.Queue--> worker 0..2 --UDP--> client

- the front-end (a process) receives datagrams on a real UDP socket and puts each into
  the queue with the sender's address in front;
- each worker blocks in ``queue.get()``: while there is nothing to do it sleeps in the
  kernel (a futex), using no CPU, and is woken by the put that gives it work;
- a worker computes the reply (here the CRC-32 of the payload) and sends it straight to
  the client from its own socket;
- the client keeps at most 64 requests in flight, so no socket buffer overflows (UDP
  would drop, silently).

Exits 0 only if every request was answered exactly once, correctly, and the idle
workers used (almost) no CPU.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import socket
import struct
import sys
import time
import zlib

import shmkit

WORKERS = 3
REQUESTS = 6000
WINDOW = 64                       # requests in flight at most
ADDR = struct.Struct("!4sH")      # the sender's IPv4 address and port, before each packet
REQUEST = struct.Struct("!I")     # sequence number, then the payload
REPLY = struct.Struct("!IIB")     # sequence number, CRC-32 of the payload, worker index


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def frontend(zone: shmkit.Zone, packets: shmkit.Queue) -> None:
    """Owns the socket; only receives and enqueues."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    zone.value("port", "i").value = sock.getsockname()[1]
    zone.event("listening").set()
    while True:
        data, (host, port) = sock.recvfrom(2048)
        if data == b"STOP":
            for _ in range(WORKERS):
                packets.put(b"")                         # one "no more work" per worker
            return
        packets.put(ADDR.pack(socket.inet_aton(host), port) + data)


def worker(zone: shmkit.Zone, packets: shmkit.Queue, index: int) -> None:
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    zone.counter("ready").inc()
    while True:
        packet = packets.get(timeout=60)                 # sleeps until a put wakes it
        if not packet:
            return
        host, port = ADDR.unpack_from(packet)
        (seq,) = REQUEST.unpack_from(packet, ADDR.size)
        payload = memoryview(packet)[ADDR.size + REQUEST.size:]
        out.sendto(REPLY.pack(seq, zlib.crc32(payload), index),
                   (socket.inet_ntoa(host), port))


def main() -> int:
    ctx = mp.get_context("spawn")
    zone = shmkit.Zone(f"udp-frontend-{os.getpid()}", 8 << 20)
    procs = []
    problems = []
    try:
        packets = zone.queue("packets", 1 << 20, spin=0)
        zone.event("listening")
        zone.counter("ready")
        fe = ctx.Process(target=frontend, args=(zone, packets), name="front-end")
        workers = [ctx.Process(target=worker, args=(zone, packets, i), name=f"worker-{i}")
                   for i in range(WORKERS)]
        procs = [fe, *workers]
        for p in procs:
            p.start()
        if not zone.event("listening").wait(60):
            raise SystemExit("FAILED: the front-end did not start")
        port = zone.value("port", "i").value
        deadline = time.monotonic() + 60
        while zone.counter("ready").get() < WORKERS and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"front-end {fe.pid} on udp 127.0.0.1:{port}; workers "
              f"{[w.pid for w in workers]} waiting in queue.get()")

        time.sleep(0.2)                                  # let them reach their sleep
        pids = [w.pid for w in workers if w.pid is not None]
        before = {pid: cpu_ticks(pid) for pid in pids}
        idle_start = time.monotonic()
        time.sleep(0.5)
        idle = time.monotonic() - idle_start
        used = {pid: cpu_ticks(pid) - t for pid, t in before.items()}
        hz = os.sysconf("SC_CLK_TCK")
        print(f"idle workers for {idle:.2f} s: CPU used "
              f"{', '.join(f'{t / hz:.2f} s' for t in used.values())}")
        if any(t / hz > 0.05 * idle for t in used.values()):
            problems.append(f"an idle worker used CPU: {used} ticks")

        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.settimeout(10)
        rnd = random.Random(7)
        expected: dict[int, int] = {}
        answered: dict[int, int] = {}
        per_worker = [0] * WORKERS
        t0 = time.perf_counter()
        sent = 0
        while len(answered) < REQUESTS:
            while sent < REQUESTS and sent - len(answered) < WINDOW:
                payload = rnd.randbytes(rnd.randrange(16, 1000))
                expected[sent] = zlib.crc32(payload)
                client.sendto(REQUEST.pack(sent) + payload, ("127.0.0.1", port))
                sent += 1
            try:
                seq, crc, who = REPLY.unpack(client.recv(64))
            except socket.timeout:
                problems.append(f"no reply within 10 s ({len(answered)} of {REQUESTS} answered)")
                break
            if seq in answered:
                problems.append(f"request {seq} answered twice")
            answered[seq] = crc
            per_worker[who] += 1
            if expected.get(seq) != crc:
                problems.append(f"request {seq}: wrong answer")
        took = time.perf_counter() - t0
        client.sendto(b"STOP", ("127.0.0.1", port))
        for p in procs:
            p.join(30)
            if p.exitcode != 0:
                problems.append(f"{p.name} exited with {p.exitcode}")
        st = packets.statistics()
        print(f"{len(answered)} of {REQUESTS} requests answered in {took:.2f} s "
              f"({len(answered) / took:,.0f}/s), by worker: {per_worker}")
        print(f"queue: {st.puts} puts, {st.gets} gets, {st.waits} sleeps of a worker, "
              f"{st.drops} dropped")
        if len(answered) != REQUESTS or sorted(answered) != list(range(REQUESTS)):
            problems.append("not every request was answered")
        if st.puts != REQUESTS + WORKERS or st.gets != st.puts or st.drops:
            problems.append("the queue's counts do not add up")
        if st.waits == 0:
            problems.append("no worker ever slept: they were polling")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        zone.close()
        zone.unlink()
    if problems:
        for why in problems[:10]:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print(f"OK: {REQUESTS} UDP requests went from the front-end to {WORKERS} workers through "
          "one queue and were each answered once, correctly; idle workers slept (no CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/asyncio.md's example, run as written: a plain-asyncio HTTP service that answers
from a shmkit Dict, feeds a shmkit Queue drained by a worker process, long-polls a
SharedConfig published by another process, and counts requests under an awaited Lock."""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

from conftest import wait_until

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "asyncio.md"


def example_source() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- example: serve\.py[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/asyncio.md lost its example"
    return m.group(1)


SENT = []


def request(port, method, path, body=None, timeout=20):
    SENT.append(path)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def publish_later(zone_name, delay):
    import time as t

    import shmkit as s
    t.sleep(delay)
    s.Zone(zone_name, 16 << 20).config("settings").publish({"mode": "fast"})


def test_example_service(tmp_path, name, procs):
    script = tmp_path / "serve.py"
    script.write_text(example_source())
    SENT.clear()
    p = subprocess.Popen([sys.executable, str(script), name, "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    procs.append(p)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on"), line + p.stderr.read()
        port = int(line.split()[-1])
        assert request(port, "GET", "/cache/hello") == (404, "not found")
        assert request(port, "POST", "/jobs", b"hello") == (202, "queued")
        assert request(port, "POST", "/jobs", b"world") == (202, "queued")
        wait_until(lambda: request(port, "GET", "/cache/world")[0] == 200, timeout=30,
                   what="the worker process to store the job's result")
        assert request(port, "GET", "/cache/hello") == (200, "HELLO")
        # a long poll, answered when another process publishes the configuration
        import multiprocessing as mp
        pub = mp.get_context("spawn").Process(target=publish_later, args=(name, 0.5))
        pub.start()
        procs.append(pub)
        t0 = time.monotonic()
        status, reply = request(port, "GET", "/config?after=0")
        assert status == 200 and json.loads(reply) == {"version": 1, "mode": "fast"}
        assert time.monotonic() - t0 >= 0.3
        hits = int(request(port, "GET", "/hits")[1])
        assert hits == len(SENT)          # every request counted once
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)   # the name fixture removes the zone
    assert p.returncode == 0, err

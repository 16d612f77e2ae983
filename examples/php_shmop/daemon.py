"""A PHP page and a Python daemon exchanging data through shmop and a SysV key.

    python examples/php_shmop/daemon.py

The daemon (this program) creates an 8 KiB System V segment under the key
``ftok("daemon.py", "S")`` - page.php computes the same key with PHP's ``ftok()`` - and
publishes its status there.  It then starts PHP's built-in web server (``php -S``, the
real php-cli with its shmop extension) on a free local port and requests page.php a few
times, as a browser would.  Each page writes a request into the segment, waits for the
daemon's answer, reads the daemon's status consistently (a seqlock) and returns all of
it as JSON.  The daemon answers each request: the text upper-cased and its SHA-256.

The segment's layout is written at the top of page.php.  The segment's lifecycle is
``unlink_on_creator_exit``: it is removed when the daemon exits, even if it is killed.
Exits 0 only if every page got the right answer to its own request, in order, with a
consistent status.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import shmkit
from shmkit import inventory

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 8192
MAGIC = b"SHKPHP01"
REQ_SEQ, REQ_LEN, REQ_TEXT = 8, 16, 20
ANS_SEQ, ANS_LEN, ANS_TEXT = 1024, 1032, 1036
ST_VERSION, ST_LEN, ST_TEXT = 4096, 4104, 4108
U64, U32 = struct.Struct("<Q"), struct.Struct("<I")
TEXTS = ["hello from PHP", "shared memory", "ftok and shmop", "naïve café", "a" * 1000,
         "", "last one"]


class Daemon:
    def __init__(self, seg: shmkit.Segment):
        self.seg = seg
        self.buf = seg.buf
        self.served = 0
        self.version = 0
        self.started = time.time()
        self.buf[:len(MAGIC)] = MAGIC
        self.publish_status(None)

    def publish_status(self, last: str | None) -> None:
        """Seqlock: odd while writing, even (and bumped) when done."""
        raw = json.dumps({"served": self.served, "last": last, "daemon_pid": os.getpid(),
                          "up_seconds": round(time.time() - self.started, 3)}).encode()
        self.version += 1
        self.buf[ST_VERSION:ST_VERSION + 8] = U64.pack(self.version)       # odd
        self.buf[ST_LEN:ST_LEN + 4] = U32.pack(len(raw))
        self.buf[ST_TEXT:ST_TEXT + len(raw)] = raw
        self.version += 1
        self.buf[ST_VERSION:ST_VERSION + 8] = U64.pack(self.version)       # even

    def poll(self) -> bool:
        """Answer the pending request, if there is one."""
        n = U64.unpack(self.buf[REQ_SEQ:REQ_SEQ + 8])[0]
        if n == U64.unpack(self.buf[ANS_SEQ:ANS_SEQ + 8])[0]:
            return False
        length = U32.unpack(self.buf[REQ_LEN:REQ_LEN + 4])[0]
        text = bytes(self.buf[REQ_TEXT:REQ_TEXT + length]).decode()
        answer = json.dumps({"upper": text.upper(),
                             "sha256": hashlib.sha256(text.encode()).hexdigest()}).encode()
        self.served += 1
        self.publish_status(text)
        self.buf[ANS_LEN:ANS_LEN + 4] = U32.pack(len(answer))
        self.buf[ANS_TEXT:ANS_TEXT + len(answer)] = answer
        self.buf[ANS_SEQ:ANS_SEQ + 8] = U64.pack(n)                        # published
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_php(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    log = tempfile.TemporaryFile()                  # its access log (a pipe could fill up)
    php = subprocess.Popen(["php", "-S", f"127.0.0.1:{port}", "-t", HERE],
                           cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if php.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"php -S exited: {log.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return php
        except OSError:
            time.sleep(0.02)
    php.kill()
    raise RuntimeError("php -S did not start listening within 15 s")


def browse(port: int, results: list[tuple[str, int | None, Any]]) -> None:
    """The browser: one page per text, one after the other."""
    for text in TEXTS:
        url = f"http://127.0.0.1:{port}/page.php?" + urllib.parse.urlencode({"text": text})
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                results.append((text, r.status, json.loads(r.read())))
        except Exception as e:                          # noqa: BLE001 - reported below
            results.append((text, None, {"error": repr(e)}))


def main() -> int:
    if not shutil.which("php"):
        print("FAILED: this example needs php-cli with shmop (apt-get install php-cli)",
              file=sys.stderr)
        return 1
    key = shmkit.ftok(os.path.join(HERE, "daemon.py"), ord("S"))
    seg = shmkit.Segment(None, "x", SIZE, key=key, lifecycle="unlink_on_creator_exit")
    info = inventory.find_segment(key=key)
    print(f"daemon {os.getpid()}: SysV segment key 0x{key:08x} (ftok of daemon.py, 'S'), "
          f"shmid {info.shmid}, {info.size} bytes, lifecycle {info.lifecycle}")
    daemon = Daemon(seg)
    php: subprocess.Popen[bytes] | None = None
    port = 0
    results: list[tuple[str, int | None, Any]] = []
    try:
        for attempt in range(3):                        # the port may be taken meanwhile
            try:
                port = free_port()
                php = start_php(port)
                break
            except RuntimeError as e:
                if attempt == 2:
                    raise
                print(f"retrying: {e}")
        assert php is not None
        print(f"php -S 127.0.0.1:{port} serving page.php (pid {php.pid})")
        browser = threading.Thread(target=browse, args=(port, results), daemon=True)
        browser.start()
        deadline = time.monotonic() + 60
        while browser.is_alive() and time.monotonic() < deadline:
            if not daemon.poll():
                time.sleep(0.0002)
        browser.join(1)
    finally:
        if php is not None:
            php.terminate()
            php.wait(10)
        del daemon
        seg.close()                                     # the creator leaves: removed

    problems = []
    for n, (text, status, page) in enumerate(results, 1):
        answer = page.get("answer") or {}
        ok = (status == 200 and page.get("request") == n and page.get("text") == text
              and answer.get("sha256") == hashlib.sha256(text.encode()).hexdigest()
              and answer.get("upper") == text.upper()
              and (page.get("status") or {}).get("served") == n
              and page["status"].get("last") == text
              and page["status"].get("daemon_pid") == os.getpid())
        shown = text if len(text) < 24 else text[:20] + "..."
        print(f"  page {n}: {shown!r} -> {str(answer.get('upper'))[:24]!r}, sha256 "
              f"{str(answer.get('sha256'))[:12]}..., daemon status served "
              f"{(page.get('status') or {}).get('served')} (php pid {page.get('php_pid')}, "
              f"PHP {page.get('php')}) {'ok' if ok else 'WRONG: ' + json.dumps(page)[:300]}")
        if not ok:
            problems.append(f"page {n} ({text!r}) got a wrong or missing answer")
    if len(results) != len(TEXTS):
        problems.append(f"only {len(results)} of {len(TEXTS)} pages completed")
    if daemon_left(key):
        problems.append(f"the segment key 0x{key:08x} is still there")
    if problems:
        for why in problems:
            print(f"FAILED: {why}", file=sys.stderr)
        return 1
    print(f"OK: {len(TEXTS)} PHP pages and the Python daemon exchanged requests, answers "
          f"and status through SysV key 0x{key:08x} (shmop), every answer right and in order; "
          "the segment went with the daemon")
    return 0


def daemon_left(key: int) -> bool:
    try:
        inventory.find_segment(key=key)
        return True
    except shmkit.SegmentNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())

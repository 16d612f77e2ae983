"""Helpers for the status page tests: a real `shmkit serve` process on a free port, raw
HTTP requests to it, and a real headless Chromium (Debian's) driven by Playwright.
Everything started here is stopped by the fixture or context manager that started it,
also when the test fails."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


class Served:
    """``python -m shmkit serve --port 0 ARGS...``; ``.port``, ``.get()``, ``.json()``."""

    def __init__(self, *args: str, env: dict | None = None):
        self.args = args
        self.env = env
        self.proc = None
        self.port = None
        self.banner = ""
        self._buf = b""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shmkit", "serve", "--port", "0", "--quiet", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=0,
            env=dict(os.environ, **(self.env or {})))
        try:
            line = self._line(30)
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if not m:
                raise AssertionError(f"unexpected first line from shmkit serve: {line!r}")
            self.port = int(m.group(1))
            self.banner = line
        except BaseException:
            self.stop()
            raise
        return self

    def _line(self, timeout):
        """The next line of stdout (our own buffer: select() cannot see what a buffered
        reader already took in)."""
        import selectors
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"shmkit serve printed no line within {timeout}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.proc.wait(10)
                raise AssertionError(f"shmkit serve exited ({code}): {self.proc.stderr.read()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode() + "\n"

    def readline(self, timeout=10.0) -> str:
        return self._line(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, *, headers: dict | None = None,
                body: bytes | None = None, timeout: float = 30.0):
        """(status, headers dict (lower-case), body bytes); the path is sent as given."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def json(self, path: str = "/status.json"):
        status, _, body = self.get(path)
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass

    def __exit__(self, *exc):
        self.stop()


def without_preload() -> dict:
    """The environment without LD_PRELOAD (for programs not built for the sanitizer)."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def need_chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")


class Browser:
    """A fresh headless Chromium (own profile directory) with one page."""

    def __init__(self, width=1280, height=900):
        self.size = (width, height)
        self.errors: list[str] = []

    def __enter__(self):
        from playwright.sync_api import sync_playwright
        self._profile = tempfile.mkdtemp(prefix="shmkit-chromium-")
        # neither Playwright's driver nor Chromium is built for the sanitizer runtime that
        # `make sanitize` preloads into Python
        preload = os.environ.pop("LD_PRELOAD", None)
        try:
            self._pw = sync_playwright().start()
        finally:
            if preload is not None:
                os.environ["LD_PRELOAD"] = preload
        try:
            self.context = self._pw.chromium.launch_persistent_context(
                self._profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": self.size[0], "height": self.size[1]}, env=without_preload())
            self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
            self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
            self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                         if m.type == "error" else None)
            self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"),
                                              d.dismiss()))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if getattr(self, "context", None) is not None:
                self.context.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def spawn_holder(code: str, *args: str) -> subprocess.Popen:
    """A plain interpreter running ``code`` with stdin, stdout and stderr as pipes: it can
    block on ``sys.stdin.read()`` until the test closes stdin (or kills it)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)
